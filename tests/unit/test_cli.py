"""The `bottle` CLI: exit codes, output contracts, no tracebacks for bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from botbottle import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "bottles"
BOTTLE = shutil.which("bottle", path=str(Path(sys.executable).parent)) or "bottle"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_validate_examples() -> None:
    code, out, err = run("validate", str(EXAMPLES))
    assert code == cli.EXIT_OK, err
    assert "ok  base" in out
    assert "3 bottle(s) valid, 0 error(s)" in out


def test_validate_json_contract(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("egres: {}\n")
    (tmp_path / "good.yml").write_text("{}\n")
    code, out, _ = run("validate", str(tmp_path), "--format", "json")
    assert code == cli.EXIT_INVALID
    data = json.loads(out)
    assert set(data) == {"format", "valid", "bottles", "errors"}
    assert data["valid"] is False
    assert [b["name"] for b in data["bottles"]] == ["good"]
    [error] = data["errors"]
    assert set(error) == {"file", "line", "path", "message", "fix"}
    assert error["path"] == "$.egres"
    assert error["line"] == 1


def test_plan_json_contract() -> None:
    code, out, _ = run("plan", str(EXAMPLES), "--format", "json")
    assert code == cli.EXIT_OK
    data = json.loads(out)
    assert set(data) == {"format", "valid", "bottles", "errors"}
    assert data["format"] == cli.PLAN_FORMAT
    web = next(b for b in data["bottles"] if b["name"] == "web-dev")
    assert set(web) == {
        "name",
        "file",
        "chain",
        "description",
        "backend",
        "policy",
        "warnings",
        "env",
        "runtime",
        "render",
    }
    assert set(web["policy"]) == {"format", "exact_hosts", "wildcard_zones", "cidrs", "log", "hash"}
    assert web["backend"] == "smolmachines"
    assert web["render"]["smolmachines"]["allow_hosts"] == [
        "=api.anthropic.com",
        "=registry.npmjs.org",
        "*.githubusercontent.com",
    ]
    assert len(web["warnings"]) == 1
    assert web["env"]["NPM_TOKEN"] == {"kind": "prompt", "prompt": "npm token"}


def test_plan_docker_renders_dnsmasq_and_firewall() -> None:
    code, out, _ = run(
        "plan",
        str(EXAMPLES / "base.yml"),
        "--backend",
        "docker",
        "--format",
        "json",
        "--upstream-dns",
        "198.51.100.53",
        "--resolver-ip",
        "10.89.0.2",
        "--gateway-ip",
        "10.89.0.1",
    )
    assert code == cli.EXIT_OK
    docker = json.loads(out)["bottles"][0]["render"]["docker"]
    assert "server=/api.anthropic.com/198.51.100.53" in docker["dnsmasq"]
    assert "server=/*.api.anthropic.com/" in docker["dnsmasq"]
    assert "-A BOTTLE_DNS -d 10.89.0.2/32 -j RETURN" in docker["firewall"]["ipv4"]


def test_plan_text_shows_wildcard_warning_and_rules() -> None:
    code, out, _ = run("plan", str(EXAMPLES), "--backend", "docker")
    assert code == cli.EXIT_OK
    assert "WARNING: route '*.githubusercontent.com'" in out
    assert "server=/*.api.anthropic.com/" in out
    assert f"note: {cli.PLACEHOLDER_UPSTREAM} is a placeholder upstream" in out


def test_plan_never_prints_env_values(tmp_path: Path) -> None:
    (tmp_path / "s.yml").write_text('env:\n  API_KEY: "literal-s3cr3t"\n')
    for fmt in ("text", "json"):
        code, out, err = run("plan", str(tmp_path), "--format", fmt)
        assert code == cli.EXIT_OK
        assert "literal-s3cr3t" not in out + err


def test_plan_bad_upstream_is_invalid_input() -> None:
    code, _, err = run("plan", str(EXAMPLES), "--backend", "docker", "--upstream-dns", "dns.x")
    assert code == cli.EXIT_INVALID
    assert "upstream 'dns.x'" in err
    assert "Traceback" not in err


def test_internal_errors_exit_1_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_paths: object, **_kwargs: object) -> object:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "resolve_all", boom)
    monkeypatch.delenv("BOTTLE_DEBUG", raising=False)
    code, _, err = run("validate", str(EXAMPLES))
    assert code == cli.EXIT_FAILED
    assert "internal error" in err and "kaboom" in err
    assert "Traceback" not in err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"], io.StringIO(), io.StringIO())
    assert info.value.code == cli.EXIT_INVALID


CASES = {
    "unknown-key": (
        "egress:\n  routes:\n    - hots: api.example.com\n",
        {},
        "$.egress.routes[0].hots: unknown key 'hots'",
        "did you mean 'host'?",
    ),
    "bad-host": (
        'egress:\n  routes:\n    - host: "bad host.example"\n',
        {},
        "$.egress.routes[0].host:",
        "write an exact host name",
    ),
    "cidr-in-host": (
        "egress:\n  routes:\n    - host: 10.0.0.0/8\n",
        {},
        "put IP literals and CIDRs in 'cidr'",
        "fix:",
    ),
    "cycle": (
        "extends: other\n",
        {"other.yml": "extends: cycle\n"},
        "extends cycle: cycle -> other -> cycle",
        "fix:",
    ),
    "missing-parent": ("extends: nowhere\n", {}, "parent bottle 'nowhere' not found", "fix:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_console_script_bad_input_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    text, others, message, fix = CASES[case]
    (tmp_path / (f"{case}.yml")).write_text(text)
    for name, content in others.items():
        (tmp_path / name).write_text(content)
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"}
    proc = subprocess.run(
        [BOTTLE, "validate", str(tmp_path / (f"{case}.yml"))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"{case}.yml" in errors[0] or "other.yml" in errors[0]
    assert message in errors[0] and fix in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_console_script_version() -> None:
    proc = subprocess.run([BOTTLE, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("bottle ")

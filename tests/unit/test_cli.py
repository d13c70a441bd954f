"""The `bottle` CLI: exit codes, output contracts, no tracebacks for bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from botbottle import cli, report

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
    assert data["format"] == report.PLAN_FORMAT
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
    assert set(web["policy"]) == {
        "format",
        "exact_hosts",
        "wildcard_zones",
        "cidrs",
        "log",
        "http",
        "auth",
        "dlp",
        "hash",
    }
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


# --------------------------------------------------------------------------- unenforced keys

MATCHES = (
    "egress:\n"
    "  routes:\n"
    "    - host: pypi.org\n"
    "    - host: api.github.com\n"
    "      matches: [{paths: [{type: prefix, value: /repos/our-org/}]}]\n"
)


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_validate_refuses_a_key_where_its_backend_does_not_enforce_it(tmp_path: Path) -> None:
    (tmp_path / "scoped.yml").write_text(MATCHES)
    for extra in ([], ["--backend", "smolmachines"]):
        code, out, err = run("validate", str(tmp_path / "scoped.yml"), *extra)
        assert code == cli.EXIT_INVALID, err
        [line] = _errors(err)
        assert "scoped.yml:5: $.egress.routes[1].matches: route 1 (host api.github.com)" in line
        assert "'matches' is not enforced by the smolmachines backend:" in line
        assert "(fix: remove the key, or use a backend that enforces it; the docker" in line
        assert "ok  scoped" not in out
        assert "Traceback" not in out + err
    # the docker backend's egress proxy enforces matches
    code, out, err = run("validate", str(tmp_path / "scoped.yml"), "--backend", "docker")
    assert code == cli.EXIT_OK and "ok  scoped" in out, err


def test_validate_without_backend_checks_both_and_with_one_checks_that_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "disk.yml").write_text("runtime: {storage_gib: 20}\n")  # smolmachines only
    (tmp_path / "user.yml").write_text("runtime: {user: agent}\n")  # docker only
    for name, path, enforced_by, other in (
        ("disk", "$.runtime.storage_gib", "smolmachines", "docker"),
        ("user", "$.runtime.user", "docker", "smolmachines"),
    ):
        target = str(tmp_path / f"{name}.yml")
        code, out, _ = run("validate", target, "--backend", enforced_by)
        assert code == cli.EXIT_OK and f"ok  {name}" in out
        assert f"(backends: {enforced_by})" in out
        code, _, err = run("validate", target, "--backend", other)
        assert code == cli.EXIT_INVALID
        [line] = _errors(err)
        assert f"{name}.yml:1: {path}:" in line and f"the {other} backend:" in line
        code, _, err = run("validate", target)
        assert code == cli.EXIT_INVALID
        [line] = _errors(err)
        assert f"the {other} backend:" in line and "unless given --backend" in line
        assert "(backends: smolmachines, docker)" in err


def test_validate_json_lists_unenforced_keys_as_errors(tmp_path: Path) -> None:
    (tmp_path / "scoped.yml").write_text(MATCHES)
    code, out, _ = run("validate", str(tmp_path), "--format", "json")
    assert code == cli.EXIT_INVALID
    data = json.loads(out)
    assert data["valid"] is False and data["bottles"] == []
    [error] = data["errors"]
    assert error["path"] == "$.egress.routes[1].matches" and error["line"] == 5
    assert error["file"].endswith("scoped.yml")
    assert "the docker backend's egress proxy enforces" in error["fix"]


def test_plan_refuses_keys_its_backend_does_not_enforce(tmp_path: Path) -> None:
    (tmp_path / "disk.yml").write_text("runtime: {storage_gib: 20}\n")
    (tmp_path / "scoped.yml").write_text(MATCHES)
    code, out, _ = run("plan", str(tmp_path / "disk.yml"))  # smolmachines applies it
    assert code == cli.EXIT_OK and "bottle disk" in out
    code, out, err = run("plan", str(tmp_path / "disk.yml"), "--backend", "docker")
    assert code == cli.EXIT_INVALID
    assert "bottle disk" not in out
    [line] = _errors(err)
    assert "$.runtime.storage_gib: 'runtime.storage_gib' is not enforced by the docker" in line
    for backend in ("smolmachines", "docker"):
        code, out, err = run("plan", str(tmp_path), "--backend", backend, "--format", "json")
        assert code == cli.EXIT_INVALID
        data = json.loads(out)
        assert data["valid"] is False
        assert [b["name"] for b in data["bottles"]] == (
            ["disk"] if backend != "docker" else ["scoped"]
        )
        paths = sorted(e["path"] for e in data["errors"])
        expected = ["$.egress.routes[1].matches"]
        if backend == "docker":  # its egress proxy enforces matches
            expected = ["$.runtime.storage_gib"]
        assert paths == expected
        assert "Traceback" not in err


class FakeFleet:
    """bottle up's preflight without Ansible: a fixed inventory, a runner that records."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hosts: dict[str, Any]):
        self.runs: list[dict[str, Any]] = []
        self.inventory = tmp_path / "inventory.yml"
        self.inventory.write_text("# read through the fake\n")
        data = {"_meta": {"hostvars": hosts}}
        monkeypatch.setattr(cli.fleet, "load_inventory", lambda _path: data)
        monkeypatch.setattr(cli.fleet, "run_playbook", self.run_playbook)

    def run_playbook(self, playbook: str, inventory: str, progress: Any, **kwargs: Any) -> Any:
        self.runs.append({"playbook": playbook, **kwargs})
        return 0, self.inventory.parent / "artifacts"

    def main(self, *argv: str) -> tuple[int, str, str]:
        return run(*argv[:1], "-i", str(self.inventory), *argv[1:])


def test_up_refuses_what_each_hosts_backend_does_not_enforce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scoped.yml").write_text(MATCHES)
    (tmp_path / "disk.yml").write_text("runtime: {storage_gib: 20}\n")
    (tmp_path / "plain.yml").write_text("egress: {routes: [{host: pypi.org}]}\n")
    fake = FakeFleet(
        monkeypatch,
        tmp_path,
        {
            "micro": {"bottles": ["disk.yml", "plain.yml"]},  # default: smolmachines
            "lab": {"bottle_backend": "docker", "bottles": [{"manifest": "disk.yml"}]},
            "demo": {"bottle_backend": "auto", "bottles": ["scoped.yml"]},
        },
    )
    code, out, err = fake.main("up")
    assert code == cli.EXIT_INVALID
    assert fake.runs == []  # nothing was touched
    errors = _errors(err)
    assert len(errors) == 2, err
    disk = next(line for line in errors if "storage_gib" in line)
    assert "disk.yml:1: $.runtime.storage_gib:" in disk and "by the docker backend" in disk
    assert "inventory host lab runs it on bottle_backend docker" in disk
    scoped = next(line for line in errors if "matches" in line)
    assert "scoped.yml:5: $.egress.routes[1].matches: route 1 (host api.github.com)" in scoped
    assert "inventory host demo runs it on bottle_backend auto, which may use either" in scoped
    assert "(fix: remove the key, or use a backend that enforces it" in scoped
    assert "nothing was touched" in err
    assert "Traceback" not in out + err
    # the fleet-wide plan is bottle up --check: refused the same way
    code, _, err = fake.main("plan")
    assert code == cli.EXIT_INVALID and fake.runs == [] and len(_errors(err)) == 2


def test_up_backend_override_and_bottles_being_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "disk.yml").write_text("runtime: {storage_gib: 20}\n")
    fake = FakeFleet(monkeypatch, tmp_path, {"h": {"bottles": ["disk.yml"]}})
    assert fake.main("up")[0] == cli.EXIT_OK  # smolmachines applies storage_gib
    assert [r["playbook"] for r in fake.runs] == ["site.yml"]
    code, _, err = fake.main("up", "--backend", "docker")
    assert code == cli.EXIT_INVALID and len(fake.runs) == 1
    assert "inventory host h runs it on --backend docker" in err
    # down, status, verify remove or read: they never refuse a key
    for command in ("down", "status", "verify"):
        fake.main(command)
    assert len(fake.runs) == 4
    # a bottle declared absent is being removed: nothing to enforce
    gone = FakeFleet(
        monkeypatch,
        tmp_path,
        {
            "h": {
                "bottle_backend": "docker",
                "bottles": [{"manifest": "disk.yml", "state": "absent"}],
            }
        },
    )
    assert gone.main("up")[0] == cli.EXIT_OK and len(gone.runs) == 1


def test_up_refuses_an_unknown_bottle_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain.yml").write_text("{}\n")
    fake = FakeFleet(
        monkeypatch,
        tmp_path,
        {
            "h": {"bottle_backend": "lxc", "bottles": ["plain.yml"]},
            "t": {"bottle_backend": "{{ chosen }}", "bottles": ["plain.yml"]},  # site.yml checks
        },
    )
    code, _, err = fake.main("up")
    assert code == cli.EXIT_INVALID and fake.runs == []
    [line] = _errors(err)
    assert "inventory host h: bottle_backend: bottle_backend 'lxc' is not one of" in line

"""The fleet side of the CLI: events to progress, summaries, exit codes, inventory checks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from botbottle import cli, fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def ev(kind: str, **data: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": data}


def test_plain_progress_lists_changes_and_failures_only() -> None:
    out = io.StringIO()
    progress = fleet.Progress(out=out)
    progress(ev("playbook_on_play_start", play="Bring bottles up"))
    progress(ev("playbook_on_task_start", task="Agent container"))
    progress(ev("runner_on_ok", host="h1", res={"changed": False}))
    progress(ev("runner_on_ok", host="h2", res={"changed": True}))
    progress(ev("runner_on_failed", host="h3", res={"msg": "Docker does not answer"}))
    progress(ev("runner_on_failed", host="h4", res={"msg": "ignored"}, ignore_errors=True))
    lines = out.getvalue().splitlines()
    assert lines[0] == "== Bring bottles up"
    assert "h1" not in out.getvalue()
    assert lines[1].split() == ["h2", "changed", "Agent", "container"]
    assert lines[2].startswith("h3") and "FAILED" in lines[2]
    assert "Docker does not answer" in lines[2]
    assert progress.failures == {"h3": "Agent container: Docker does not answer"}
    assert progress.changed == {"h2": 1}


def test_tty_progress_shows_every_result_with_elapsed_time() -> None:
    out = io.StringIO()
    progress = fleet.Progress(out=out, tty=True)
    progress(ev("playbook_on_task_start", task="Probe"))
    progress(ev("runner_on_ok", host="h1", res={}))
    assert "\r\x1b[K[" in out.getvalue() and "h1" in out.getvalue()


def test_secrets_are_redacted_from_progress_and_summary() -> None:
    out = io.StringIO()
    progress = fleet.Progress(out=out, secrets=["s3cr3t-token"])
    progress(ev("playbook_on_task_start", task="Agent"))
    progress(ev("runner_on_failed", host="h1", res={"msg": "bad value s3cr3t-token"}))
    progress(ev("playbook_on_stats", failures={"h1": 1}, ok={"h1": 2}))
    code, lines = fleet.summary(progress, 2)
    assert "s3cr3t-token" not in out.getvalue() + "\n".join(lines)
    assert code == 1


def test_summary_exit_codes_and_failed_hosts() -> None:
    progress = fleet.Progress(out=io.StringIO())
    progress(ev("playbook_on_task_start", task="Refuse smolmachines bottles"))
    progress(ev("runner_on_failed", host="b", res={"msg": "cannot boot microVMs"}))
    progress(
        ev(
            "playbook_on_stats",
            ok={"a": 3, "b": 1},
            changed={"a": 2},
            failures={"b": 1},
            dark={},
            artifact_data={"bottle_status": {"a": []}},
        )
    )
    code, lines = fleet.summary(progress, 2)
    assert code == 1
    assert lines == [
        "ok      a: 2 change(s)",
        "FAILED  b: Refuse smolmachines bottles: cannot boot microVMs",
    ]
    assert progress.set_stats == {"bottle_status": {"a": []}}

    clean = fleet.Progress(out=io.StringIO())
    clean(ev("playbook_on_stats", ok={"a": 3}, changed={}, failures={}, dark={}))
    assert fleet.summary(clean, 0) == (0, ["ok      a: 0 change(s)"])


def test_unreachable_hosts_fail_the_run() -> None:
    progress = fleet.Progress(out=io.StringIO())
    progress(ev("runner_on_unreachable", host="c", res={"msg": "ssh: no route"}))
    progress(ev("playbook_on_stats", ok={}, dark={"c": 1}))
    code, lines = fleet.summary(progress, 4)
    assert code == 1 and lines == ["FAILED  c: : ssh: no route"]


def test_inventory_bottles_and_validation(tmp_path: Path) -> None:
    (tmp_path / "ok.yml").write_text("egress: {routes: [{host: a.example}]}\n")
    (tmp_path / "bad.yml").write_text("egress: {routes: [{hots: a.example}]}\n")
    inventory = {
        "_meta": {
            "hostvars": {
                "h1": {"bottles": [{"manifest": "ok.yml", "state": "started"}]},
                "h2": {"bottles": ["bad.yml"]},
                "h3": {},
            }
        }
    }
    assert fleet.inventory_bottles(inventory) == {
        "h1": [{"manifest": "ok.yml", "state": "started"}],
        "h2": [{"manifest": "bad.yml"}],
        "h3": [],
    }
    checked = fleet.validate_inventory(inventory, tmp_path)
    assert checked.count == 2
    assert [p.path for p in checked.problems] == ["$.egress.routes[0].hots"]


def test_run_playbook_drives_ansible_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fleet.ARTIFACTS_ENV, str(tmp_path))
    seen: dict[str, Any] = {}

    class Result:
        rc = 0

    def fake_run(**kwargs: Any) -> Result:
        seen.update(kwargs)
        kwargs["event_handler"](ev("playbook_on_stats", ok={"h": 1}))
        return Result()

    progress = fleet.Progress(out=io.StringIO())
    rc, artifacts = fleet.run_playbook(
        "site.yml",
        "/inv.yml",
        progress,
        limit="h",
        check=True,
        extravars={"x": 1},
        runner_run=fake_run,
    )
    assert rc == 0
    assert seen["playbook"].endswith("/site.yml") and seen["inventory"] == "/inv.yml"
    assert seen["limit"] == "h" and seen["cmdline"] == "--check --diff"
    assert seen["extravars"] == {"x": 1} and seen["quiet"] is True
    assert seen["private_data_dir"] == str(tmp_path)
    assert artifacts == tmp_path / "artifacts" / seen["ident"]
    assert progress.stats["ok"] == {"h": 1}


def test_cli_fleet_commands_refuse_invalid_inventories(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("egress: {routes: [{host: 10.0.0.0/8}]}\n")
    inv = tmp_path / "inventory.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n      bottles:\n        - manifest: bad.yml\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["up", "-i", str(inv)], out, err) == cli.EXIT_INVALID
    assert "put IP literals and CIDRs in 'cidr'" in err.getvalue()
    assert "nothing was touched" in err.getvalue()
    missing = io.StringIO()
    assert (
        cli.main(["status", "-i", str(tmp_path / "nope.yml")], io.StringIO(), missing)
        == cli.EXIT_INVALID
    )
    assert "not found" in missing.getvalue()


def test_host_variables_copied_into_env_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s.yml").write_text("env:\n  TOKEN: ${BB_TEST_TOKEN}\n")
    monkeypatch.setenv("BB_TEST_TOKEN", "tok-123456")
    inventory = {"_meta": {"hostvars": {"h": {"bottles": ["s.yml"]}}}}
    assert fleet.validate_inventory(inventory, tmp_path).secrets == ["tok-123456"]


@pytest.mark.parametrize(("name", "bottles"), [("local.yml", 2), ("fleet.yml", 4)])
def test_example_inventories_are_valid(name: str, bottles: int) -> None:
    inventory = EXAMPLES / "inventory" / name
    checked = fleet.validate_inventory(fleet.load_inventory(str(inventory)), inventory.parent)
    assert checked.problems == [] and checked.count == bottles
    assert sum(len(records) for records in checked.resolved.values()) == bottles


def test_each_host_is_resolved_once_and_handed_on_as_the_lookup_would(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("egress:\n  routes:\n    - host: api.example.com\n")
    (tmp_path / "b.yml").write_text('extends: a\nenv:\n  T: \'{{ lookup("pipe", "id") }}\'\n')
    inventory = {
        "_meta": {
            "hostvars": {
                "h1": {
                    "bottles": [{"manifest": "a.yml"}, {"manifest": "b.yml", "state": "absent"}]
                },
                # a templated backend is only known to the play: it resolves h2 itself
                "h2": {"bottles": ["a.yml"], "bottle_backend": "{{ some_var }}"},
                "h3": {},
            }
        }
    }
    checked = fleet.validate_inventory(inventory, tmp_path, check_backends=True)
    assert checked.problems == []
    assert sorted(checked.resolved) == ["h1", "h3"]
    by_name = {r["name"]: r for r in checked.resolved["h1"]}
    assert by_name["a"]["state"] == "started" and by_name["b"]["state"] == "absent"
    assert by_name["b"]["chain"] == [str(tmp_path / "a.yml"), str(tmp_path / "b.yml")]
    assert by_name["b"]["object"] == "bottle-b"
    assert by_name["b"]["policy"]["exact_hosts"] == ["api.example.com"]
    # the text is handed on as written (the play reads it as data, never as a template)
    assert by_name["b"]["manifest"]["env"]["T"] == '{{ lookup("pipe", "id") }}'
    assert checked.resolved["h3"] == []
    # without the backend check (bottle down) every host is handed on
    assert sorted(fleet.validate_inventory(inventory, tmp_path).resolved) == ["h1", "h2", "h3"]


def test_the_resolved_bottles_reach_the_playbook_in_a_private_file_removed_after_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fleet.ARTIFACTS_ENV, str(tmp_path))
    seen: dict[str, Any] = {}

    class Result:
        rc = 0

    def fake_run(**kwargs: Any) -> Result:
        handoff = Path(kwargs["extravars"]["bottle_resolved_file"])
        seen["mode"] = handoff.stat().st_mode & 0o777
        seen["data"] = json.loads(handoff.read_text())
        seen["path"] = handoff
        return Result()

    resolved = {"h": [{"name": "a", "state": "started"}]}
    fleet.run_playbook(
        "site.yml",
        "/inv.yml",
        fleet.Progress(out=io.StringIO()),
        resolved=resolved,
        runner_run=fake_run,
    )
    assert seen["mode"] == 0o600 and seen["data"] == resolved
    assert not seen["path"].exists()


def test_plan_takes_paths_or_an_inventory(tmp_path: Path) -> None:
    err = io.StringIO()
    assert cli.main(["plan"], io.StringIO(), err) == cli.EXIT_INVALID
    assert "needs manifest PATHs or -i INVENTORY" in err.getvalue()
    err = io.StringIO()
    assert cli.main(["plan", "x.yml", "-i", "inv.yml"], io.StringIO(), err) == cli.EXIT_INVALID
    assert "not both" in err.getvalue()
    err = io.StringIO()
    assert (
        cli.main(["plan", "-i", str(tmp_path / "none.yml")], io.StringIO(), err) == cli.EXIT_INVALID
    )
    assert "not found" in err.getvalue()


def test_artifacts_are_scrubbed(tmp_path: Path) -> None:
    (tmp_path / "command").write_text(
        json.dumps(
            {
                "command": ["ansible-playbook"],
                "env": {"ANSIBLE_CONFIG": "/x", "FORGE": "tok-abcdef", "HOME": "/root"},
            }
        )
    )
    events = tmp_path / "job_events"
    events.mkdir()
    (events / "1.json").write_text('{"stdout": "value tok-abcdef here"}')
    fleet.scrub_artifacts(tmp_path, ["tok-abcdef"])
    assert json.loads((tmp_path / "command").read_text())["env"] == {"ANSIBLE_CONFIG": "/x"}
    assert "tok-abcdef" not in (events / "1.json").read_text()


def test_notices_are_always_shown() -> None:
    out = io.StringIO()
    progress = fleet.Progress(out=out)
    progress(ev("runner_on_ok", host="h", res={"msg": "NOTICE h: auto is using docker because"}))
    assert out.getvalue() == "NOTICE h: auto is using docker because\n"


def test_prompted_answers_in_the_inventory_are_secrets_to_redact(tmp_path: Path) -> None:
    inventory = {
        "_meta": {
            "hostvars": {
                "a": {"bottle_secrets": {"web": {"NPM_TOKEN": "npm-answer-1"}}},
                "b": {"docker_bottle_secrets": {"x": {"K": "answer-2"}}, "bottle_secrets": "bad"},
            }
        }
    }
    assert fleet.inventory_answers(inventory) == ["answer-2", "npm-answer-1"]
    assert fleet.validate_inventory(inventory, tmp_path).secrets == ["answer-2", "npm-answer-1"]


def test_a_failed_loop_names_each_failed_item() -> None:
    result = {
        "msg": "One or more items failed",
        "results": [
            {"failed": False, "_ansible_item_label": "ok-bottle"},
            {
                "failed": True,
                "_ansible_item_label": "web (started)",
                "msg": "create resolver failed",
            },
        ],
    }
    assert fleet.failure_message(result) == "web (started): create resolver failed"
    assert fleet.failure_message({"msg": "plain"}) == "plain"
    assert fleet.failure_message({"stderr": "boom"}) == "boom"

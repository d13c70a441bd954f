"""Manifest loading, extends/merge rules, schema validation and error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import (
    env_summary,
    resolve,
    resolve_all,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_extends import merge
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_load import load_document
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    ManifestError,
    Problem,
    json_path,
)

# the checkout's examples (this file: collections/ansible_collections/botbottle/bottle/tests/...)
EXAMPLES = Path(__file__).resolve().parents[8] / "examples" / "bottles"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        resolve(path)
    return info.value.problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, [p.format() for p in problems]
    return problems[0]


# --------------------------------------------------------------------------- examples


def test_examples_are_valid_and_extend_base() -> None:
    bottles, problems = resolve_all([EXAMPLES])
    assert problems == []
    by_name = {b.name: b for b in bottles}
    assert set(by_name) == {"base", "python-dev", "web-dev"}
    assert [p.name for p in by_name["web-dev"].chain] == ["base.yml", "web-dev.md"]
    assert by_name["web-dev"].policy.wildcard_zones == ("githubusercontent.com",)
    assert "api.anthropic.com" in by_name["python-dev"].policy.exact_hosts


# --------------------------------------------------------------------------- loading


def test_markdown_front_matter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "md-bottle.md",
        """
        ---
        egress:
          routes:
            - host: api.example.com
        ---
        # Title

        Body text with: colons and - dashes, ignored.
        """,
    )
    bottle = resolve(path)
    assert bottle.name == "md-bottle"
    assert bottle.policy.exact_hosts == ("api.example.com",)


def test_markdown_line_numbers_count_the_front_matter_fence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "md.md",
        """
        ---
        egress:
          routes:
            - hots: api.example.com
        ---
        """,
    )
    problem = only_problem(path)
    assert problem.line == 4
    assert problem.path == "$.egress.routes[0].hots"


def test_markdown_without_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.md", "# just docs\n")
    problem = only_problem(path)
    assert "no YAML front matter" in problem.message


def test_folder_skips_markdown_documentation(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "# Bottles\n\nSome docs.\n")
    write(tmp_path, "one.yml", "egress: {routes: [{host: a.example}]}\n")
    bottles, problems = resolve_all([tmp_path])
    assert problems == []
    assert [b.name for b in bottles] == ["one"]


@pytest.mark.parametrize("name", ["Upper.yml", "under_score.yml", "1digit.yml", "-dash.yml"])
def test_file_name_must_be_a_bottle_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "{}\n")
    problem = only_problem(path)
    assert "not a valid bottle name" in problem.message
    assert "^[a-z][a-z0-9-]*$" in problem.fix


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broken.yml",
        """
        egress:
          routes:
            - host: [unclosed
        """,
    )
    problem = only_problem(path)
    assert problem.message.startswith("invalid YAML")
    assert problem.line is not None


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "list.yml", "- a\n- b\n"))
    assert "expected a mapping" in problem.message


def test_empty_file_is_an_empty_bottle(tmp_path: Path) -> None:
    bottle = resolve(write(tmp_path, "empty.yml", ""))
    assert bottle.policy.exact_hosts == ()


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.yml",
        """
        env:
          A: "1"
          A: "2"
        """,
    )
    problem = only_problem(path)
    assert problem.message == "duplicate key 'A'"
    assert problem.path == "$.env.A"
    assert problem.line == 3


def test_missing_path_is_reported(tmp_path: Path) -> None:
    bottles, problems = resolve_all([tmp_path / "nope.yml"])
    assert bottles == []
    assert "no such file" in problems[0].message


def test_empty_folder_is_reported(tmp_path: Path) -> None:
    _, problems = resolve_all([tmp_path])
    assert "no manifests found" in problems[0].message


# --------------------------------------------------------------------------- schema errors


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.yml",
        """
        egress:
          routes:
            - hots: api.example.com
        """,
    )
    problem = only_problem(path)
    assert problem.file.endswith("typo.yml")
    assert problem.line == 3
    assert problem.path == "$.egress.routes[0].hots"
    assert problem.message == "unknown key 'hots'"
    assert "did you mean 'host'?" in problem.fix
    assert "\n" not in problem.format()


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "top.yml", "egres: {}\n"))
    assert problem.path == "$.egres"
    assert "did you mean 'egress'?" in problem.fix


@pytest.mark.parametrize(
    ("key", "hint"),
    [("git", "renamed 'git-gate'"), ("supervise", "always on"), ("backend", "--backend")],
)
def test_removed_keys_have_migration_hints(tmp_path: Path, key: str, hint: str) -> None:
    problem = only_problem(write(tmp_path, "old.yml", f"{key}: {{}}\n"))
    assert hint in problem.fix


def test_role_on_a_route_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "role.yml",
        """
        egress:
          routes:
            - host: api.example.com
              role: proxy
        """,
    )
    problem = only_problem(path)
    assert problem.path == "$.egress.routes[0].role"
    assert "reserved" in problem.fix


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("10.0.0.0/8", "put IP literals and CIDRs in 'cidr'"),
        ("192.0.2.1", "put IP literals and CIDRs in 'cidr'"),
        ("bad_host.example", "not a valid DNS label"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.*.example", "not a valid DNS label"),
    ],
)
def test_bad_hosts(tmp_path: Path, host: str, message: str) -> None:
    path = write(tmp_path, "bad.yml", f'egress:\n  routes:\n    - host: "{host}"\n')
    problem = only_problem(path)
    assert problem.path == "$.egress.routes[0].host"
    assert message in problem.message
    assert "'cidr'" in problem.fix


def test_bad_cidr(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "c.yml", "egress: {routes: [{cidr: 10.0.0.0/33}]}\n"))
    assert problem.path == "$.egress.routes[0].cidr"
    assert "not an IP address or CIDR" in problem.message


@pytest.mark.parametrize(
    "route",
    [
        "{host: a.example, cidr: 10.0.0.0/8}",
        "{}",
        "{cidr: 10.0.0.0/8, auth: {scheme: Bearer, token_ref: T}}",
    ],
)
def test_route_needs_exactly_one_destination(tmp_path: Path, route: str) -> None:
    problem = only_problem(write(tmp_path, "r.yml", f"egress: {{routes: [{route}]}}\n"))
    assert problem.path == "$.egress.routes[0]"
    assert "exactly one of 'host' or 'cidr'" in problem.message


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("egress: {log: 3}\n", "$.egress.log", "is not one of 0, 1, 2"),
        ("egress: {routes: {host: a}}\n", "$.egress.routes", "expected a list, got mapping"),
        ("runtime: {cpus: 0}\n", "$.runtime.cpus", "minimum"),
        ("runtime: {workdir: relative}\n", "$.runtime.workdir", "not valid"),
        (
            "runtime: {capabilities: [NET_ADMIN]}\n",
            "$.runtime.capabilities[0]",
            "NET_ADMIN is refused",
        ),
        (
            "runtime: {mounts: [{source: /a}]}\n",
            "$.runtime.mounts[0]",
            "missing required key 'target'",
        ),
        ("extends: Bad_Name\n", "$.extends", "not valid"),
        ("env: {1BAD: x}\n", '$.env["1BAD"]', "not a valid name"),
        (
            "egress: {routes: [{host: a.example, auth: {scheme: Basic, token_ref: T}}]}\n",
            "$.egress.routes[0].auth.scheme",
            "is not one of",
        ),
        (
            "egress: {routes: [{host: a.example, dlp: {outbound_detectors: [nope]}}]}\n",
            "$.egress.routes[0].dlp.outbound_detectors",
            "none of the allowed forms",
        ),
    ],
)
def test_schema_errors_are_path_precise(
    tmp_path: Path, text: str, path: str, fragment: str
) -> None:
    problem = only_problem(write(tmp_path, "s.yml", text))
    assert problem.path == path
    assert fragment in problem.message + problem.fix


def test_capability_error_names_the_fix(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "cap.yml", "runtime: {capabilities: [NET_RAW]}\n"))
    assert "NET_RAW is refused" in problem.message and "keep only" in problem.fix


def test_env_values_never_appear_in_errors(tmp_path: Path) -> None:
    secret = "${not valid s3cr3t-value}"
    path = write(tmp_path, "e.yml", f'env:\n  TOKEN: "{secret}"\n')
    problem = only_problem(path)
    assert problem.path == "$.env.TOKEN"
    assert "s3cr3t" not in problem.format()


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.yml",
        """
        egres: {}
        runtime:
          cpu: 2
        egress:
          routes:
            - host: 10.0.0.1
        """,
    )
    paths = [p.path for p in problems_of(path)]
    assert paths == ["$.egres", "$.runtime.cpu", "$.egress.routes[0].host"]


# --------------------------------------------------------------------------- extends


def test_extends_cycle_shows_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", "extends: b\n")
    write(tmp_path, "b.yml", "extends: c\n")
    write(tmp_path, "c.yml", "extends: a\n")
    problem = only_problem(tmp_path / "a.yml")
    assert problem.message == "extends cycle: a -> b -> c -> a"
    assert problem.file.endswith("c.yml")
    assert problem.path == "$.extends"


def test_self_extends_is_a_cycle(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "me.yml", "extends: me\n"))
    assert problem.message == "extends cycle: me -> me"


def test_missing_parent_shows_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "child.yml", "extends: [base, middle]\n")
    write(tmp_path, "base.yml", "{}\n")
    write(tmp_path, "middle.yml", "extends: ghost\n")
    problem = only_problem(tmp_path / "child.yml")
    assert "parent bottle 'ghost' not found" in problem.message
    assert "child -> middle -> ghost" in problem.message
    assert problem.file.endswith("middle.yml")
    assert "ghost.yml" in problem.fix


def test_ambiguous_parent(tmp_path: Path) -> None:
    write(tmp_path, "c.yml", "extends: p\n")
    write(tmp_path, "p.yml", "{}\n")
    write(tmp_path, "p.md", "---\n{}\n---\n")
    assert "ambiguous" in only_problem(tmp_path / "c.yml").message


def test_parent_errors_name_the_parent_file(tmp_path: Path) -> None:
    write(tmp_path, "c.yml", "extends: p\n")
    write(tmp_path, "p.yml", "egress: {routes: [{hots: x.example}]}\n")
    problem = only_problem(tmp_path / "c.yml")
    assert problem.file.endswith("p.yml")
    assert problem.path == "$.egress.routes[0].hots"


def test_merge_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yml",
        """
        description: base
        agent_provider: {template: claude, auth_token: TOKEN_A}
        env: {A: "1", B: "1"}
        runtime: {image: img-a, cpus: 1, command: [a]}
        git-gate:
          user: {name: Base, email: base@example.com}
          repos:
            app: {url: ssh://a/app.git, host_key: KEY}
        egress:
          log: 1
          routes: [{host: base.example}]
        """,
    )
    write(
        tmp_path,
        "tools.yml",
        """
        env: {B: "2", C: "2"}
        git-gate:
          user: {email: tools@example.com}
          repos:
            app: {url: ssh://b/app.git}
            lib: {url: ssh://b/lib.git}
        egress:
          routes: [{host: tools.example}]
        """,
    )
    write(
        tmp_path,
        "child.yml",
        """
        extends: [base, tools]
        agent_provider: {template: codex}
        env: {C: "3"}
        runtime: {cpus: 4}
        egress:
          log: 2
          routes: [{host: child.example}, {cidr: 10.0.0.0/8}]
        """,
    )
    bottle = resolve(tmp_path / "child.yml")
    m = bottle.manifest
    assert "extends" not in m
    assert m["description"] == "base"
    assert m["agent_provider"] == {"template": "codex"}  # replaced, not merged
    assert m["env"] == {"A": "1", "B": "2", "C": "3"}
    assert m["runtime"] == {"image": "img-a", "cpus": 4, "command": ["a"]}
    assert m["git-gate"]["user"] == {"name": "Base", "email": "tools@example.com"}
    assert m["git-gate"]["repos"] == {
        "app": {"url": "ssh://b/app.git", "host_key": "KEY"},
        "lib": {"url": "ssh://b/lib.git"},
    }
    assert [r.get("host", r.get("cidr")) for r in m["egress"]["routes"]] == [
        "base.example",
        "tools.example",
        "child.example",
        "10.0.0.0/8",
    ]
    assert m["egress"]["log"] == 2
    assert bottle.policy.exact_hosts == ("base.example", "child.example", "tools.example")
    assert [p.name for p in bottle.chain] == ["base.yml", "tools.yml", "child.yml"]


def test_diamond_parents_are_folded_once(tmp_path: Path) -> None:
    write(tmp_path, "root.yml", "egress: {routes: [{host: root.example}]}\n")
    write(tmp_path, "left.yml", "extends: root\negress: {routes: [{host: left.example}]}\n")
    write(tmp_path, "right.yml", "extends: root\negress: {routes: [{host: right.example}]}\n")
    write(tmp_path, "leaf.yml", "extends: [left, right]\n")
    bottle = resolve(tmp_path / "leaf.yml")
    assert [p.name for p in bottle.chain] == ["root.yml", "left.yml", "right.yml", "leaf.yml"]
    hosts = [r["host"] for r in bottle.manifest["egress"]["routes"]]
    assert hosts == ["root.example", "left.example", "right.example"]


def test_explicit_empty_repos_clears_inherited(tmp_path: Path) -> None:
    write(tmp_path, "p.yml", "git-gate: {repos: {app: {url: ssh://a/app.git}}}\n")
    write(tmp_path, "c.yml", "extends: p\ngit-gate: {repos: {}}\n")
    assert resolve(tmp_path / "c.yml").manifest["git-gate"]["repos"] == {}


def test_merge_without_routes_keeps_no_routes_key() -> None:
    assert merge([{"egress": {"log": 1}}, {"env": {"A": "1"}}]) == {
        "egress": {"log": 1},
        "env": {"A": "1"},
    }


def test_duplicate_bottle_names_across_folders(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", "same.yml", "{}\n")
    write(tmp_path / "two", "same.yml", "{}\n")
    bottles, problems = resolve_all([tmp_path / "one", tmp_path / "two"])
    assert len(bottles) == 1
    assert "also defined by" in problems[0].message


# --------------------------------------------------------------------------- env


def test_env_summary_never_holds_values() -> None:
    summary = env_summary(
        {
            "env": {
                "LIT": "plain-secret",
                "HOST": "${HOME_TOKEN}",
                "ASK": "?Your token",
                "BARE": "?",
                "NUM": 8080,
            }
        }
    )
    assert summary == {
        "ASK": {"kind": "prompt", "prompt": "Your token"},
        "BARE": {"kind": "prompt", "prompt": "BARE"},
        "HOST": {"kind": "host", "variable": "HOME_TOKEN"},
        "LIT": {"kind": "literal"},
        "NUM": {"kind": "literal"},
    }
    assert "plain-secret" not in repr(summary)


def test_json_path() -> None:
    assert json_path(["egress", "routes", 0, "host"]) == "$.egress.routes[0].host"
    assert json_path(["git-gate", "repos", "my repo"]) == '$.git-gate.repos["my repo"]'
    assert json_path([]) == "$"


def test_load_document_records_lines(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, "l.yml", "env:\n  A: x\negress:\n  routes: []\n"))
    assert doc.line_of(["egress", "routes"]) == 4
    assert doc.line_of(["env", "A", "deeper"]) == 2


@pytest.mark.parametrize(
    "name", ["HTTPS_PROXY", "http_proxy", "NO_PROXY", "SSL_CERT_FILE", "PIP_CERT"]
)
def test_env_may_not_set_the_proxy_and_ca_variables(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "agent.yml", f"env:\n  {name}: http://elsewhere.example:3128\n")
    problem = only_problem(path)
    assert f"'{name}'" in problem.message and problem.line == 2
    assert "egress proxy" in problem.fix


def test_env_may_set_other_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yml", "env:\n  HTTPS_PROXY_NOTE: x\n  TZ: UTC\n")
    bottle = resolve(path)
    assert set(bottle.manifest["env"]) == {"HTTPS_PROXY_NOTE", "TZ"}

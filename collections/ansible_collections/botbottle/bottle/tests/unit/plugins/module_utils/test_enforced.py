"""Which backend enforces which manifest key: the table, the pure function, and the
problems that name the file, the route and the key (module_utils/_enforced.py and
botbottle.enforcement)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._enforced import (
    AUTO,
    BACKENDS,
    CONSEQUENCE,
    DOCKER,
    ENFORCED,
    KEYS,
    PROXY_FIX,
    SMOLMACHINES,
    backends_for,
    enforces,
    is_set,
    unenforced,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import (
    backend_problems,
    check_bottles,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import resolve
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_schema import schema

ROOT = Path(__file__).resolve().parents[8]  # the checkout (its README)
NOT_BACKEND_KEYS = {"description", "extends"}  # read before any backend sees the manifest

# One manifest per key that sets it (a valid manifest on its own), and the path named.
SAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "egress.routes[].host": ({"egress": {"routes": [{"host": "a.example"}]}}, ""),
    "egress.routes[].cidr": ({"egress": {"routes": [{"cidr": "203.0.113.0/24"}]}}, ""),
    "egress.routes[].wide": (
        {"egress": {"routes": [{"cidr": "0.0.0.0/0", "wide": True}]}},
        "",
    ),
    "egress.log": ({"egress": {"log": 1}}, "$.egress.log"),
    "egress.dlp": ({"egress": {"dlp": {"outbound_on_match": "redact"}}}, "$.egress.dlp"),
    "egress.routes[].auth": (
        {
            "egress": {
                "routes": [
                    {"host": "a.example"},
                    {"host": "git.example.com", "auth": {"scheme": "token", "token_ref": "T"}},
                ]
            }
        },
        "$.egress.routes[1].auth",
    ),
    "egress.routes[].matches": (
        {
            "egress": {
                "routes": [
                    {"host": "a.example"},
                    {"host": "b.example"},
                    {
                        "host": "api.github.com",
                        "matches": [{"paths": [{"type": "prefix", "value": "/repos/our-org/"}]}],
                    },
                ]
            }
        },
        "$.egress.routes[2].matches",
    ),
    "egress.routes[].dlp": (
        {"egress": {"routes": [{"host": "a.example", "dlp": {"outbound_on_match": "block"}}]}},
        "$.egress.routes[0].dlp",
    ),
    "git-gate": ({"git-gate": {"user": {"name": "Agent"}}}, "$.git-gate"),
    "agent_provider": ({"agent_provider": {"template": "claude"}}, "$.agent_provider"),
    "env": ({"env": {"TZ": "UTC"}}, ""),
    "runtime.image": ({"runtime": {"image": "debian:12"}}, ""),
    "runtime.command": ({"runtime": {"command": ["sleep", "1"]}}, ""),
    "runtime.cpus": ({"runtime": {"cpus": 2}}, ""),
    "runtime.memory_mib": ({"runtime": {"memory_mib": 512}}, ""),
    "runtime.storage_gib": ({"runtime": {"storage_gib": 8}}, "$.runtime.storage_gib"),
    "runtime.workdir": ({"runtime": {"workdir": "/w"}}, ""),
    "runtime.user": ({"runtime": {"user": "agent"}}, "$.runtime.user"),
    "runtime.mounts": ({"runtime": {"mounts": [{"source": "/srv/w", "target": "/w"}]}}, ""),
    "runtime.ports": ({"runtime": {"ports": [{"host": 8080, "guest": 80}]}}, "$.runtime.ports"),
    "runtime.ports[].protocol": (
        {
            "runtime": {
                "ports": [{"host": 1, "guest": 1}, {"host": 2, "guest": 2, "protocol": "udp"}]
            }
        },
        "$.runtime.ports[1].protocol",
    ),
    "runtime.ports[].address": (
        {"runtime": {"ports": [{"host": 2, "guest": 2, "address": "0.0.0.0"}]}},
        "$.runtime.ports[0].address",
    ),
    "runtime.capabilities": (
        {"runtime": {"capabilities": ["CHOWN"]}},
        "$.runtime.capabilities",
    ),
    "runtime.labels": ({"runtime": {"labels": {"team": "a"}}}, ""),
}

# The table as this project's README states it (a key: smolmachines, docker).
EXPECTED = {
    "egress.routes[].host": (True, True),
    "egress.routes[].cidr": (True, True),
    "egress.routes[].wide": (True, True),
    "egress.log": (False, True),
    "egress.routes[].auth": (False, True),
    "egress.routes[].matches": (False, True),
    "egress.routes[].dlp": (False, True),
    "egress.dlp": (False, True),
    "git-gate": (False, False),
    "agent_provider": (False, False),
    "env": (True, True),
    "runtime.image": (True, True),
    "runtime.command": (True, True),
    "runtime.cpus": (True, True),
    "runtime.memory_mib": (True, True),
    "runtime.storage_gib": (True, False),
    "runtime.workdir": (True, True),
    "runtime.user": (False, True),
    "runtime.mounts": (True, True),
    "runtime.ports": (True, False),
    "runtime.ports[].protocol": (False, False),
    "runtime.ports[].address": (False, False),
    "runtime.capabilities": (False, True),
    "runtime.labels": (True, True),
}


def test_the_table_is_what_the_backends_apply() -> None:
    assert set(EXPECTED) == set(KEYS) == set(SAMPLES)
    for key, (smol, docker) in EXPECTED.items():
        assert enforces(SMOLMACHINES, key) is smol, key
        assert enforces(DOCKER, key) is docker, key
    for backend in BACKENDS:
        assert set(ENFORCED[backend]) <= set(KEYS)


def test_every_unenforced_key_says_what_is_not_done_and_the_fix() -> None:
    for key in KEYS:
        if not all(enforces(b, key) for b in BACKENDS):
            consequence, fix = CONSEQUENCE[key]
            assert consequence and fix.startswith("remove the key"), key


def test_every_schema_key_is_in_the_table_or_under_a_key_that_is() -> None:
    """A new schema key must be placed in the table: enforced somewhere, or refused."""
    covered = set(KEYS) | NOT_BACKEND_KEYS
    in_schema = set(_descriptions(schema()))
    for key in sorted(in_schema):
        under = any(key == c or key.startswith((c + ".", c + "[].")) for c in covered)
        holds = any(c.startswith((key + ".", key + "[].")) for c in covered)  # egress, runtime
        assert under or holds, f"{key} is in the schema but not in _enforced.KEYS"
    assert set(KEYS) <= in_schema


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_key_is_refused_exactly_where_it_is_not_enforced(key: str, backend: str) -> None:
    manifest, path = SAMPLES[key]
    found = unenforced(manifest, backend)
    if enforces(backend, key):
        assert found == [], found
        return
    if key.startswith("runtime.ports[].") and backend == DOCKER:
        assert [f.path for f in found] == ["$.runtime.ports"]  # refused with its ports, once
        return
    assert [f.path for f in found] == [path]
    [item] = found
    assert item.key == key and item.backends == (backend,)
    message = item.message()
    assert backend in message and item.name in message
    if item.route is not None:
        route = manifest["egress"]["routes"][item.route]
        assert f"route {item.route} (host {route['host']})" in message
        assert item.host == route["host"]
        assert "the docker backend's egress proxy enforces" in item.fix


def test_log_zero_is_off_and_levels_one_and_two_are_refused_without_a_proxy() -> None:
    assert unenforced({"egress": {"log": 0}}, AUTO) == []
    for level in (1, 2):
        assert unenforced({"egress": {"log": level}}, DOCKER) == []  # its egress proxy logs
        [item] = unenforced({"egress": {"log": level}}, AUTO)
        assert item.backends == (SMOLMACHINES,)
        assert f"'egress.log: {level}'" in item.message()
        assert item.fix == PROXY_FIX


def test_the_matches_of_the_issue_are_refused_where_there_is_no_proxy() -> None:
    manifest = {
        "egress": {
            "routes": [
                {"host": "api.github.com"},
                {
                    "host": "api.github.com",
                    "matches": [{"paths": [{"type": "prefix", "value": "/repos/our-org/"}]}],
                },
            ]
        }
    }
    assert unenforced(manifest, DOCKER) == []  # the docker backend's egress proxy matches
    for backend in (SMOLMACHINES, AUTO):
        [item] = unenforced(manifest, backend)
        assert item.backends == (SMOLMACHINES,)
        assert item.path == "$.egress.routes[1].matches"
        assert (item.route, item.host) == (1, "api.github.com")
        assert "may use any path, method and header" in item.message()


def test_empty_values_ask_for_nothing() -> None:
    assert not is_set(None) and not is_set({}) and not is_set([]) and not is_set({"repos": {}})
    assert is_set(False) and is_set(0) and is_set({"a": [1]})
    quiet = {
        "git-gate": {"repos": {}},  # an explicit {} clears inherited repositories
        "agent_provider": {},
        "runtime": {"ports": [], "capabilities": []},
    }
    assert unenforced(quiet, AUTO) == []
    # false is something asked for: "no detectors" is still a DLP setting
    [item] = unenforced(
        {"egress": {"routes": [{"host": "a.example", "dlp": {"inbound_detectors": False}}]}},
        SMOLMACHINES,
    )
    assert item.path == "$.egress.routes[0].dlp"


def test_auto_refuses_what_either_backend_does_not_enforce() -> None:
    manifest = {
        "runtime": {
            "user": "agent",
            "storage_gib": 4,
            "ports": [{"host": 8080, "guest": 80, "protocol": "tcp"}],
        }
    }
    found = {f.path: f.backends for f in unenforced(manifest, AUTO)}
    assert found == {
        "$.runtime.storage_gib": (DOCKER,),
        "$.runtime.user": (SMOLMACHINES,),
        "$.runtime.ports": (DOCKER,),
        # docker is already told by runtime.ports; smolmachines drops the protocol
        "$.runtime.ports[0].protocol": (SMOLMACHINES,),
    }
    assert backends_for(AUTO) == BACKENDS
    with pytest.raises(ValueError, match="'lxc' is not one of smolmachines, docker, auto"):
        unenforced({}, "lxc")


def test_a_key_inherited_from_a_parent_names_the_parent_file_its_line_and_route(
    tmp_path: Path,
) -> None:
    (tmp_path / "base.yml").write_text(
        "agent_provider: {template: claude}\n"
        "egress:\n"
        "  log: 2\n"
        "  routes:\n"
        "    - host: a.example\n"
        "    - host: git.example.com\n"
        "      auth: {scheme: token, token_ref: T}\n"
    )
    (tmp_path / "child.yml").write_text(
        "extends: base\n"
        "runtime: {user: agent}\n"
        "egress:\n"
        "  routes:\n"
        "    - host: api.github.com\n"
        "      matches: [{methods: [GET]}]\n"
    )
    bottle = resolve(tmp_path / "child.yml")
    problems = {p.path: p for p in backend_problems(bottle, SMOLMACHINES, "the context")}
    assert set(problems) == {
        "$.agent_provider",
        "$.egress.log",
        "$.egress.routes[1].auth",
        "$.egress.routes[0].matches",  # routes[2] of the merged manifest, routes[0] of child.yml
        "$.runtime.user",
    }
    auth = problems["$.egress.routes[1].auth"]
    assert auth.file.endswith("base.yml") and auth.line == 7
    assert "route 1 (host git.example.com): 'auth'" in auth.message
    matches = problems["$.egress.routes[0].matches"]
    assert matches.file.endswith("child.yml") and matches.line == 6
    assert "route 0 (host api.github.com): 'matches'" in matches.message
    assert matches.message.endswith("; the context")
    assert "the docker backend's egress proxy enforces" in matches.fix
    assert problems["$.egress.log"].file.endswith("base.yml")
    assert problems["$.runtime.user"].file.endswith("child.yml")
    # a problem a parent holds is reported once for every bottle that inherits it
    ok, shared = check_bottles([resolve(tmp_path / "base.yml"), bottle], SMOLMACHINES)
    assert ok == [] and len([p for p in shared if p.path == "$.agent_provider"]) == 1


def test_readme_table_says_what_the_module_says() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Which backend enforces what", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].split("`")[1]] = (cells[1], cells[2])
    assert set(rows) == set(KEYS)
    for key, cells in rows.items():
        for backend, cell in zip(BACKENDS, cells, strict=True):
            assert cell.startswith("yes" if enforces(backend, key) else "refused"), (key, cell)


def test_schema_descriptions_say_where_a_key_is_refused() -> None:
    descriptions = _descriptions(schema())
    for key in KEYS:
        where = [b for b in BACKENDS if enforces(b, key)]
        description = descriptions[key]
        if not where:
            assert "not enforced by any backend yet" in description.lower(), key
        elif len(where) == 1:
            assert f"{where[0]} backend only" in description.lower(), key


def _descriptions(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every key the schema names (in the table's notation; maps are leaves) and its
    description."""
    defs = schema()["$defs"]
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **node}
    found: dict[str, str] = {}
    for name, written in (node.get("properties") or {}).items():
        key = f"{prefix}{name}"
        sub = written
        if "$ref" in written:
            sub = {**defs[written["$ref"].split("/")[-1]], **written}
        found[key] = str(sub.get("description", ""))
        if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            found |= _descriptions(sub["items"], f"{key}[].")
        elif "properties" in sub:
            found |= _descriptions(sub, f"{key}.")
    return found

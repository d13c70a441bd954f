"""Hostile manifests: every bad manifest ends in one-line errors and exit 2, quickly.

Each case of the corpus runs through the real ``bottle`` command (a subprocess, so
its time and peak memory are its own): ``bottle validate FILE`` and ``bottle plan
FILE --format json`` must exit 2 (or 0 for the cases that are valid on purpose),
name the file, print no traceback and no "internal error", and stay within a time
and memory budget far above what a manifest needs. A property test mutates valid
manifests and runs the CLI in-process: exit 0 or 2, never 1, plan agrees with validate.
The loader's own limits (each parent loaded once, the extends depth, discovery) are tested
with the collection (its tests/unit/plugins/plugin_utils/test_hostile_manifests.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.botbottle.bottle.plugins.plugin_utils import _manifest_load
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem
from ansible_collections.botbottle.bottle.tests.unit.plugins.plugin_utils.manifest_files import (
    Writer,
    chain,
    diamond,
)
from botbottle import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "bottles"
BOTTLE = shutil.which("bottle", path=str(Path(sys.executable).parent)) or "bottle"
SECONDS = 5.0  # generous: each case takes well under a second
MEMORY_KB = 200 * 1024  # peak RSS above a trivial run of the same command

# Runs one command in a child and reports the child's own peak RSS (a fresh
# process, so RUSAGE_CHILDREN holds nothing but that child).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)
print(json.dumps({
    "rc": proc.returncode, "out": proc.stdout, "err": proc.stderr,
    "seconds": time.perf_counter() - start,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def measure(*argv: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, BOTTLE, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=90,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def baseline_kb(tmp_path_factory: pytest.TempPathFactory) -> int:
    folder = tmp_path_factory.mktemp("baseline")
    (folder / "plain.yml").write_text("description: plain\n")
    return int(measure("validate", "plain.yml", cwd=folder)["maxrss_kb"])


# --------------------------------------------------------------------------- corpus


def text(content: str, name: str = "hostile.yml", **others: str) -> Writer:
    def write(folder: Path) -> str:
        (folder / name).write_text(content)
        for other, body in others.items():
            (folder / f"{other}.yml").write_text(body)
        return name

    return write


def raw(content: bytes, name: str = "hostile.yml") -> Writer:
    def write(folder: Path) -> str:
        (folder / name).write_bytes(content)
        return name

    return write


def ten_megabytes(folder: Path) -> str:
    with (folder / "huge.yml").open("w") as handle:
        handle.write("env:\n")
        for index in range(10 * 1024 * 1024 // 32):
            handle.write(f"  V{index:08d}: xxxxxxxxxxxxxxxxx\n")
    return "huge.yml"


def alias_bomb(levels: int) -> Writer:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return text("\n".join(lines) + "\n", "bomb.yml")


def alias_bomb_in_labels(folder: Path) -> str:
    lines = ["runtime:", "  labels:", '    l0: &l0 "lol"']
    lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (folder / "bomb.yml").write_text("\n".join(lines) + "\n")
    return "bomb.yml"


def symlink_cycle(folder: Path) -> str:
    (folder / "child.yml").write_text("extends: parent\n")
    (folder / "parent.yml").symlink_to("child.yml")
    return "child.yml"


def symlink_loop_in_folder(folder: Path) -> str:
    (folder / "good.yml").write_text("description: fine\n")
    (folder / "loop-a.yml").symlink_to("loop-b.yml")
    (folder / "loop-b.yml").symlink_to("loop-a.yml")
    return "."


def broken_symlink_in_folder(folder: Path) -> str:
    (folder / "good.yml").write_text("description: fine\n")
    (folder / "gone.yml").symlink_to("nowhere.yml")
    return "."


def broken_symlink_parent(folder: Path) -> str:
    (folder / "child.yml").write_text("extends: gone\n")
    (folder / "gone.yml").symlink_to("nowhere.yml")
    return "child.yml"


# name: (writer, exit code, text every error output must hold)
CORPUS: dict[str, tuple[Writer, int, str]] = {
    # 1. YAML, safely
    "ten-megabytes": (ten_megabytes, 2, "more than the limit of 1,048,576 bytes"),
    "alias-bomb-9-levels": (alias_bomb(9), 2, "more than 50,000 values"),
    "alias-bomb-in-labels": (alias_bomb_in_labels, 2, "more than 50,000 values"),
    "recursive-alias": (text("a: &a [*a]\n"), 2, "recursive alias"),
    "recursive-alias-in-mapping": (text("env: &e {A: *e}\n"), 2, "recursive alias"),
    "flow-nesting-600": (text("x: " + "[" * 600 + "]" * 600 + "\n"), 2, "more than 64 levels"),
    "block-nesting-100": (
        text("".join(" " * (2 * i) + f"k{i}:\n" for i in range(100)) + " " * 200 + "v: 1\n"),
        2,
        "more than 64 levels",
    ),
    "non-string-label-keys": (
        text("runtime:\n  labels: {1: a, ~: b}\n"),
        2,
        "$.runtime.labels[\"1\"]: key '1' is read as a number",
    ),
    "boolean-key": (text("env:\n  yes: x\n"), 2, "read as a boolean"),
    "null-key": (text("env:\n  ~: x\n"), 2, "read as null"),
    "mapping-key": (text("env:\n  ? {a: 1}\n  : x\n"), 2, "a key is a mapping"),
    "list-key": (text("env:\n  ? [a]\n  : x\n"), 2, "a key is a list"),
    "binary-tag": (text("description: !!binary aGVsbG8=\n"), 2, "tag !!binary"),
    "set-tag": (text("env: !!set {A}\n"), 2, "tag !!set"),
    "timestamp-tag": (text("description: !!timestamp 2024-01-01\n"), 2, "tag !!timestamp"),
    "python-tag": (
        text("description: !!python/object/apply:os.system [id]\n"),
        2,
        "tag !!python/object/apply:os.system",
    ),
    "omap-tag": (text("env: !!omap [A: b]\n"), 2, "tag !!omap"),
    "pairs-tag": (text("env: !!pairs [A: b]\n"), 2, "tag !!pairs"),
    "local-tag": (text("description: !shell ls\n"), 2, "tag !shell"),
    "merge-key": (
        text("env:\n  <<: {A: x}\n  B: y\n"),
        2,
        "merge keys ('<<') are not accepted",
    ),
    "bad-explicit-int": (text("runtime:\n  cpus: !!int two\n"), 2, "'two' is not a valid !!int"),
    "bad-explicit-bool": (text("runtime:\n  labels: {a: !!bool maybe}\n"), 2, "!!bool"),
    "empty-explicit-int": (text('runtime:\n  cpus: !!int ""\n'), 2, "'' is not a valid !!int"),
    "int-beyond-python-limit": (text("runtime:\n  cpus: " + "9" * 5000 + "\n"), 2, "!!int"),
    "date-where-number-expected": (
        text("runtime:\n  cpus: 2024-01-01\n"),
        2,
        "$.runtime.cpus: expected an integer, got string",
    ),
    "two-documents": (text("a: 1\n---\nb: 2\n"), 2, "expected a single document"),
    "nul-byte": (raw(b"description: a\x00b\n"), 2, "control characters are not allowed"),
    "not-utf-8": (raw(b"description: caf\xe9\n"), 2, "not UTF-8"),
    "undefined-alias": (text("env: *nothing\n"), 2, "undefined alias"),
    # 2. extends
    "chain-300-deep": (chain(300), 2, "extends chain longer than 256 bottles: c299 -> c298"),
    "symlink-cycle": (symlink_cycle, 2, "extends cycle: child -> parent"),
    "extends-cycle": (
        text("extends: other\n", "start.yml", other="extends: start\n"),
        2,
        "extends cycle: start -> other -> start",
    ),
    # 3. patterns and a trailing newline
    "env-name-newline": (text('env:\n  "A\\n": x\n'), 2, '$.env["A\\n"]'),
    "env-value-host-ref-newline": (text('env:\n  A: "${VAR}\\n"\n'), 2, "$.env.A"),
    "token-ref-newline": (
        text(
            "egress:\n  routes:\n    - host: api.example.com\n"
            '      auth: {scheme: token, token_ref: "T\\n"}\n'
        ),
        2,
        "$.egress.routes[0].auth.token_ref",
    ),
    "extends-name-newline": (text('extends: "a\\n"\n', a="{}\n"), 2, "$.extends"),
    "label-key-newline": (text('runtime:\n  labels: {"a\\n": x}\n'), 2, "$.runtime.labels"),
    "template-newline": (
        text('agent_provider: {template: "claude\\n"}\n'),
        2,
        "$.agent_provider.template",
    ),
    "email-newline": (
        text('git-gate: {user: {email: "agent@example.com\\n"}}\n'),
        2,
        "$.git-gate.user.email",
    ),
    # capabilities, mounts, cidr routes: what a bottle may never get
    "cap-net-admin-prefixed": (
        text("runtime:\n  capabilities: [CAP_NET_ADMIN]\n"),
        2,
        "NET_ADMIN is refused",
    ),
    "cap-net-admin-lower": (text("runtime:\n  capabilities: [cap_net_admin]\n"), 2, "NET_ADMIN"),
    "cap-all": (text("runtime:\n  capabilities: [ALL]\n"), 2, "capability ALL is refused"),
    "cap-sys-admin": (text("runtime:\n  capabilities: [sys_admin]\n"), 2, "SYS_ADMIN"),
    "mount-docker-socket": (
        text("runtime:\n  mounts: [{source: /var/run/docker.sock, target: /s}]\n"),
        2,
        "Unix socket",
    ),
    "mount-root": (text("runtime:\n  mounts: [{source: /, target: /h}]\n"), 2, "root file system"),
    "mount-etc-by-dotdot": (
        text("runtime:\n  mounts: [{source: /srv/../etc, target: /e}]\n"),
        2,
        "inside /etc",
    ),
    "mount-var-holds-docker": (
        text("runtime:\n  mounts: [{source: /var, target: /v}]\n"),
        2,
        "holds /var/run",
    ),
    "cidr-everything": (text("egress:\n  routes:\n    - cidr: 0.0.0.0/0\n"), 2, "add 'wide: true'"),
    "cidr-v6-everything": (text("egress:\n  routes:\n    - cidr: '::/0'\n"), 2, "wide: true"),
    "cidr-zone-id": (text("egress:\n  routes:\n    - cidr: 'fe80::1%eth0'\n"), 2, "has a zone id"),
    "cidr-metadata": (
        text("egress:\n  routes:\n    - cidr: 169.254.169.254\n"),
        2,
        "cloud metadata",
    ),
    "cidr-loopback": (text("egress:\n  routes:\n    - cidr: 127.0.0.0/8\n"), 2, "loopback"),
    "cidr-white-space": (
        text("egress:\n  routes:\n    - cidr: ' 10.0.0.0/8'\n"),
        2,
        "surrounding white space",
    ),
    # keys no backend (here: neither smolmachines, which plan renders by default, nor
    # docker) enforces are refused, never silently ignored
    "matches-not-enforced": (
        text(
            "egress:\n  routes:\n    - host: api.github.com\n"
            "      matches: [{paths: [{type: prefix, value: /repos/our-org/}]}]\n"
        ),
        2,
        "$.egress.routes[0].matches: route 0 (host api.github.com): 'matches' is not enforced",
    ),
    "auth-not-enforced": (
        text(
            "egress:\n  routes:\n    - host: api.github.com\n"
            "      auth: {scheme: Bearer, token_ref: GH_TOKEN}\n"
        ),
        2,
        "route 0 (host api.github.com): 'auth' is not enforced",
    ),
    "dlp-not-enforced": (
        text(
            "egress:\n  routes:\n    - host: api.github.com\n"
            "      dlp: {outbound_on_match: block}\n"
        ),
        2,
        "route 0 (host api.github.com): 'dlp' is not enforced",
    ),
    "log-2-not-enforced": (text("egress: {log: 2}\n"), 2, "'egress.log: 2' is not enforced"),
    "git-gate-not-enforced": (
        text("git-gate: {repos: {app: {url: ssh://git@git.example.com/app.git}}}\n"),
        2,
        "$.git-gate: 'git-gate' is not enforced",
    ),
    "agent-provider-not-enforced": (
        text("agent_provider: {template: codex}\n"),
        2,
        "$.agent_provider: 'agent_provider' is not enforced",
    ),
    "user-not-on-smolmachines": (
        text("runtime: {user: root}\n"),
        2,
        "'runtime.user' is not enforced by the smolmachines backend",
    ),
    "capabilities-not-on-smolmachines": (
        text("runtime: {capabilities: [CHOWN]}\n"),
        2,
        "'runtime.capabilities' is not enforced by the smolmachines backend",
    ),
    "port-protocol-and-address-not-on-smolmachines": (
        text("runtime: {ports: [{host: 5353, guest: 53, protocol: udp, address: 0.0.0.0}]}\n"),
        2,
        "$.runtime.ports[0].address",
    ),
    # 4. no silent skips
    "symlink-loop-in-folder": (symlink_loop_in_folder, 2, "symlink loop"),
    "broken-symlink-in-folder": (broken_symlink_in_folder, 2, "broken symlink"),
    "broken-symlink-parent": (broken_symlink_parent, 2, "broken symlink"),
    # valid on purpose: fast, and exit 0
    "diamond-20-levels": (diamond(20), 0, ""),
    "chain-64-deep": (chain(64), 0, ""),
    "implicit-date-is-a-string": (text("description: 2024-01-01\n"), 0, ""),
    "bom-before-front-matter": (
        raw("\ufeff---\ndescription: BOM first\n---\n# body\n".encode(), "bom.md"),
        0,
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_hostile_manifest_is_refused_in_one_line(
    tmp_path: Path, baseline_kb: int, case: str, command: str
) -> None:
    writer, expected, fragment = CORPUS[case]
    target = writer(tmp_path)
    argv = [command, target] + (["--format", "json"] if command == "plan" else [])
    result = measure(*argv, cwd=tmp_path)
    out, err = result["out"], result["err"]
    assert result["rc"] == expected, err
    assert "Traceback" not in out + err
    assert "internal error" not in err
    assert result["seconds"] < SECONDS, result["seconds"]
    assert result["maxrss_kb"] - baseline_kb < MEMORY_KB, result["maxrss_kb"]
    if command == "plan":
        data = json.loads(out)  # the whole document, never cut off
        assert data["valid"] is (expected == 0)
        errors = [Problem(**e).format() for e in data["errors"]]
    else:
        errors = [line[len("error: ") :] for line in err.splitlines() if line.startswith("error:")]
    if expected == 0:
        assert errors == []
        return
    assert errors, err
    for line in errors:
        assert "\n" not in line
        assert ".yml" in line or ".md" in line, line  # names the file
        assert "(fix: " in line, line
    assert any(fragment in line for line in errors), errors


def test_readme_in_a_folder_is_a_warning_not_a_silent_skip(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Bottles\n")
    (tmp_path / "one.yml").write_text("description: one\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["validate", str(tmp_path)], out, err) == cli.EXIT_OK
    assert "warning: " in err.getvalue()
    assert "README.md: $: skipped: no YAML front matter, not a bottle" in err.getvalue()
    assert "1 bottle(s) valid" in out.getvalue()


# --------------------------------------------------------------------------- properties


def _front_matter(path: Path) -> str:
    body = path.read_text()
    return body.split("---\n")[1] if path.suffix == ".md" else body


SEEDS: list[dict[str, Any]] = [
    yaml.safe_load(_front_matter(p)) for p in sorted(EXAMPLES.glob("*.*")) if p.name != "README.md"
] + [
    {},
    {"env": {"A": "x", "B": "${HOST}", "C": "?token"}},
    {"runtime": {"cpus": 1, "labels": {"a": "b"}}, "egress": {"log": 2, "routes": []}},
    {"extends": "base", "egress": {"routes": [{"cidr": "203.0.113.0/24"}]}},
]

ODD_STRINGS = [
    "A\n",
    "${VAR}\n",
    "${VAR}",
    "${",
    "?",
    "a\n",
    "2024-01-01",
    "2024-01-01T10:00:00Z",
    "0x1F",
    "0o17",
    "1:30",
    "yes",
    "off",
    "~",
    "<<",
    "=",
    ".inf",
    ".nan",
    "*.example.com",
    "api.example.com\n",
    " api.example.com",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "/",
    "/var/run/docker.sock",
    "NET_ADMIN",
    "base",
    "x" * 300,
    "\u2028",
    "\x85",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
)
keys = st.one_of(
    st.text(max_size=8), st.sampled_from(ODD_STRINGS), st.integers(), st.booleans(), st.none()
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
SNIPPETS = [
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "!!python/object:os.system ",
    "!!omap ",
    "!!pairs ",
    "!shell ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!null ",
    "!!map ",
    "!!seq ",
    "&anchor ",
    "*anchor ",
    "*nothing ",
    "<<: ",
    "? ",
    "[" * 80,
    "{a: " * 70,
    "\ufeff",
    "\t",
    "\x00",
    '"',
    "'",
    "|",
    ">",
    "%YAML 1.1\n",
    "---\n",
    "\n",
]
LINES = [
    "<<: {A: x}",
    "a: &a [*a]",
    "1: one",
    "~: null",
    "yes: true",
    "? [a]\n: b",
    "x: &b [1, 2]\ny: [*b, *b, *b]",
    "x: " + "[" * 100 + "]" * 100,
    "extends: x\n",
]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _mutate_data(data: Any, draw: st.DrawFn) -> Any:
    data = json.loads(json.dumps(data))  # a deep copy
    path = draw(st.sampled_from(_paths(data)))
    if not path:
        return draw(values) if draw(st.booleans()) else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["tweak", "tweak", "replace", "insert", "delete"]))
    old = parent[path[-1]]
    if action == "tweak" and isinstance(old, str):  # the same type: mostly still valid
        parent[path[-1]] = draw(st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=12)))
    elif action == "tweak" and isinstance(old, int) and not isinstance(old, bool):
        parent[path[-1]] = draw(st.integers(min_value=-2, max_value=70_000))
    elif action in ("tweak", "replace"):
        parent[path[-1]] = draw(values)
    elif action == "insert" and isinstance(parent, dict):
        parent[draw(keys)] = draw(values)
    elif action == "insert":
        parent.insert(path[-1], draw(values))
    else:
        del parent[path[-1]]
    return data


def _mutate_text(body: str, draw: st.DrawFn) -> str:
    lines = body.splitlines() or [""]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        line = lines[index]
        if draw(st.booleans()):
            column = draw(st.integers(min_value=0, max_value=len(line)))
            if ": " in line and draw(st.booleans()):
                column = line.index(": ") + 2
            lines[index] = line[:column] + draw(st.sampled_from(SNIPPETS)) + line[column:]
        else:
            indent = draw(st.sampled_from(["", "  ", "    "]))
            extra = draw(st.sampled_from(LINES)).replace("\n", "\n" + indent)
            lines.insert(index, indent + extra)
    return "\n".join(lines) + "\n"


@st.composite
def manifests(draw: st.DrawFn) -> str:
    data = draw(st.sampled_from(SEEDS))
    if draw(st.booleans()):
        data = _mutate_data(data, draw)
    try:
        body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        body = "{}\n"
    if draw(st.booleans()):
        body = _mutate_text(body, draw)
    return body


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


@settings(
    max_examples=300,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(manifests(), st.sampled_from(["m.yml", "m.md"]))
def test_mutated_manifests_exit_0_or_2_and_plan_agrees(body: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(EXAMPLES / "base.yml", folder / "base.yml")
        path = folder / name
        path.write_text(f"---\n{body}---\n" if name.endswith(".md") else body)
        # plan renders smolmachines by default; validate checks it when told to
        code, _, err = _run(["validate", str(path), "--backend", "smolmachines"])
        assert code in (cli.EXIT_OK, cli.EXIT_INVALID), err
        plan_code, plan_out, plan_err = _run(["plan", str(path), "--format", "json"])
        assert plan_code == code, plan_err
        text_code, _, text_err = _run(["plan", str(path)])
        assert text_code == code, text_err
    for stream in (err, plan_err, text_err):
        assert "internal error" not in stream and "Traceback" not in stream
        for line in stream.splitlines():
            assert line.startswith(("error: ", "warning: ")) or "bottle(s) valid" in line, line
    data = json.loads(plan_out)
    assert data["valid"] is (code == cli.EXIT_OK)


any_text = st.text(max_size=30)
labels_of = st.sampled_from(["a", "b", "api", "xn--bcher-kva", "x-y", "1", "_dmarc", "A"])
routes = st.one_of(
    st.builds(
        lambda labels, wild: {"host": ("*." if wild else "") + ".".join(labels)},
        st.lists(labels_of, min_size=1, max_size=3),
        st.booleans(),
    ),
    st.builds(
        lambda cidr: {"cidr": cidr},
        st.sampled_from(["203.0.113.0/24", "198.51.100.7", "2001:db8::/48", "10.0.0.0/8"]),
    ),
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "description": any_text,
        "extends": st.sampled_from(["base", ["base"]]),
        "env": st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
            st.one_of(
                any_text.filter(lambda v: not v.startswith("${")),
                st.integers(),
                st.from_regex(r"\$\{[A-Z_]{1,5}\}", fullmatch=True),
            ),
            max_size=4,
        ),
        "runtime": st.fixed_dictionaries(
            {},
            optional={
                "cpus": st.integers(min_value=1, max_value=64),
                "memory_mib": st.integers(min_value=128, max_value=1_048_576),
                "command": st.lists(any_text, min_size=1, max_size=3),
                "labels": st.dictionaries(
                    st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,8}", fullmatch=True),
                    any_text,
                    max_size=3,
                ),
                "workdir": any_text.map(lambda v: "/" + v),
                "image": any_text.filter(bool),
                # keys one backend applies and the other refuses
                "storage_gib": st.integers(min_value=1, max_value=4096),
                "user": any_text.filter(bool),
                "ports": st.lists(
                    st.fixed_dictionaries(
                        {"host": st.integers(1, 65535), "guest": st.integers(1, 65535)},
                        optional={"protocol": st.sampled_from(["tcp", "udp"])},
                    ),
                    max_size=2,
                ),
            },
        ),
        "egress": st.fixed_dictionaries(
            {},
            optional={"log": st.sampled_from([0, 1, 2]), "routes": st.lists(routes, max_size=4)},
        ),
    },
)


@settings(max_examples=200, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(shaped, st.sampled_from(["text", "json"]), st.sampled_from(["smolmachines", "docker"]))
def test_where_validate_passes_plan_does_not_fail(
    data: dict[str, Any], fmt: str, backend: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(EXAMPLES / "base.yml", folder / "base.yml")
        path = folder / "m.yml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        code, _, err = _run(["validate", str(path), "--backend", backend])
        plan_code, out, plan_err = _run(["plan", str(path), "--format", fmt, "--backend", backend])
    assert code in (cli.EXIT_OK, cli.EXIT_INVALID), err
    assert plan_code == code, plan_err
    assert "internal error" not in plan_err
    if fmt == "json":
        assert json.loads(out)["valid"] is (code == cli.EXIT_OK)


def test_the_pure_python_parser_refuses_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_manifest_load, "_LOADER", _manifest_load._PyLoader)
    for case in ("recursive-alias", "flow-nesting-600", "non-string-label-keys", "merge-key"):
        folder = tmp_path / case
        folder.mkdir()
        target = CORPUS[case][0](folder)
        code, _, err = _run(["validate", str(folder / target)])
        assert code == cli.EXIT_INVALID, err
        assert CORPUS[case][2] in err
    good = tmp_path / "good.yml"
    good.write_text(textwrap.dedent("description: 2024-01-01\nruntime: {cpus: 2}\n"))
    assert _run(["validate", str(good)])[0] == cli.EXIT_OK

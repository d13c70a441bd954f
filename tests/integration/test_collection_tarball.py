"""The botbottle.bottle collection from its Galaxy tarball alone (issue 15).

The checkout's collection is built with ``ansible-galaxy collection build`` and installed
into an empty collections path; a fresh virtualenv gets only ansible-core, jsonschema and
PyYAML (the versions pyproject.toml pins), never the bot-bottle package. Its
ansible-playbook runs from a folder outside the checkout with a configuration that sees
only that collections path. The playbook runs the ``bottle_manifest`` lookup, the policy
filters and the ``smolmachine``/``smolmachine_info`` modules (real smolvm records, no VM
boot) and writes their results as JSON; the test compares them with what the checkout's
own code computes in this process, so an empty or wrong answer cannot pass.

Network: pip reaches PyPI (through the configured proxy) to fill the virtualenv; nothing
else leaves this machine. No name is resolved: routes are compiled as text, smolvm's
``--allow-host-pattern`` never resolves, and the filters' resolver addresses are
documentation addresses that are only written into rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import smol

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    compile_policy,
    policy_from_dict,
    render_dnsmasq,
    render_firewall,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import (
    backend_problems,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import (
    bottle_record,
    resolve_all,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "botbottle" / "bottle"
DEV_BIN = Path(sys.executable).parent
SMOL_VMM = os.path.join(os.path.dirname(smol.__file__), "smol-vmm")
#: all the fresh virtualenv gets: these three, pinned as pyproject.toml pins them
PINNED = [
    pin
    for pin in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if pin.split("==")[0] in ("ansible-core", "jsonschema", "PyYAML")
]
#: documentation addresses, only ever written into rules
UPSTREAM, RESOLVER, GATEWAY, HOST_ADDRESS = "192.0.2.53", "172.29.0.2", "172.29.0.1", "192.0.2.7"
#: a schema error: the lookup names the file, the line, the key and the fix
INVALID = """\
---
description: broken on purpose
egress:
  routes:
    - hots: api.example.com
"""
#: valid, but smolmachines does not enforce egress.log 1: refused for that backend
UNENFORCED = """\
---
description: logs its requests, which only the Docker backend does
egress:
  log: 1
  routes:
    - host: api.example.com
"""

PLAYBOOK = textwrap.dedent(
    """\
    ---
    - name: The botbottle.bottle collection, installed from its tarball
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
        bottle: "{{ bottles | selectattr('name', 'eq', machine_of) | first }}"
      tasks:
        - name: Run the lookup, the filters and the modules
          block:
            - name: Resolve the example bottles for the Docker backend
              ansible.builtin.set_fact:
                bottles: "{{ query('botbottle.bottle.bottle_manifest', 'bottles',
                  backend='docker') }}"

            - name: An invalid manifest fails the lookup
              block:
                - name: Resolve the invalid manifest
                  ansible.builtin.set_fact:
                    refused: "{{ query('botbottle.bottle.bottle_manifest', 'invalid') }}"
              rescue:
                - name: Keep the failure
                  ansible.builtin.set_fact:
                    invalid: "{{ ansible_failed_result }}"

            - name: A key the backend does not enforce fails the lookup
              block:
                - name: Resolve the manifest for smolmachines
                  ansible.builtin.set_fact:
                    refused: "{{ query('botbottle.bottle.bottle_manifest', 'unenforced',
                      backend='smolmachines') }}"
              rescue:
                - name: Keep the failure
                  ansible.builtin.set_fact:
                    unenforced: "{{ ansible_failed_result }}"

            - name: Render every bottle's policy with the policy filters
              ansible.builtin.set_fact:
                filters:
                  egress_policy: "{{ bottles | map(attribute='manifest')
                    | map('botbottle.bottle.egress_policy') | list }}"
                  smolvm_allow: "{{ bottles | map(attribute='policy')
                    | map('botbottle.bottle.smolvm_allow') | list }}"
                  dnsmasq_lines: "{{ bottles | map(attribute='policy')
                    | map('botbottle.bottle.dnsmasq_lines', [upstream]) | list }}"
                  firewall_rules: "{{ bottles | map(attribute='policy')
                    | map('botbottle.bottle.firewall_rules', resolver, gateway, [host_address])
                    | list }}"

            - name: Create the bottle's smolvm record, twice
              botbottle.bottle.smolmachine:
                name: "{{ bottle.object }}"
                state: present
                image: "{{ rootfs }}"
                command: "{{ bottle.manifest.runtime.command }}"
                cpus: "{{ bottle.manifest.runtime.cpus }}"
                memory: "{{ bottle.manifest.runtime.memory_mib }}"
                env:
                  TZ: "{{ bottle.manifest.env.TZ }}"
                egress: "{{ bottle.policy }}"
                binary: "{{ smol_vmm }}"
                data_home: "{{ data_home }}"
              register: created
              loop: [first, again]

            - name: Read the record with smolvm's own CLI
              ansible.builtin.command:
                argv: ["{{ smol_vmm }}", machine, status, --name, "{{ bottle.object }}", --json]
              environment:
                XDG_DATA_HOME: "{{ data_home }}"
              changed_when: false
              register: status

            - name: Read the managed machines
              botbottle.bottle.smolmachine_info:
                labels:
                  botbottle.managed-by: bot-bottle
                binary: "{{ smol_vmm }}"
                data_home: "{{ data_home }}"
              register: machines

            - name: Remove the record, twice
              botbottle.bottle.smolmachine:
                name: "{{ bottle.object }}"
                state: absent
                binary: "{{ smol_vmm }}"
                data_home: "{{ data_home }}"
              register: removed
              loop: [first, again]
          always:
            - name: Write what came back for the test
              ansible.builtin.copy:
                content: "{{ {
                  'bottles': bottles | default(none),
                  'invalid': invalid | default(none),
                  'unenforced': unenforced | default(none),
                  'filters': filters | default(none),
                  'created': (created | default({})).results | default(none),
                  'status': (status | default({})).stdout | default(none),
                  'smolmachine_info': machines | default(none),
                  'removed': (removed | default({})).results | default(none),
                  } | to_json }}"
                dest: "{{ out }}/results.json"
                mode: "0600"
    """
)

LOOKUP_ONLY = textwrap.dedent(
    """\
    ---
    - name: The lookup alone
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      tasks:
        - name: Resolve the example bottles
          block:
            - name: Resolve them
              ansible.builtin.set_fact:
                bottles: "{{ query('botbottle.bottle.bottle_manifest', 'bottles') }}"
          rescue:
            - name: Keep the failure
              ansible.builtin.copy:
                content: "{{ ansible_failed_result | to_json }}"
                dest: "{{ out }}/lookup.json"
                mode: "0600"
    """
)

#: run by the virtualenv's Python: what it can import, which distributions it holds
INSPECT = """\
import importlib, importlib.metadata, json
def importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
print(json.dumps({
    "importable": {n: importable(n) for n in
                   ("ansible_collections.botbottle", "ansible", "jsonschema", "yaml")},
    "packages": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
}))
"""


@dataclass
class Installed:
    """The tarball, where it is installed, the virtualenv and a place to run from."""

    tarball: Path
    collections: Path
    venv: Path
    work: Path
    env: dict[str, str]
    seconds: float

    def run(self, tool: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """A tool of the virtualenv, from the folder outside the checkout."""
        return subprocess.run(
            [str(self.venv / "bin" / tool), *args],
            cwd=self.work,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    def play(self, text: str, name: str, **extra_env: str) -> tuple[Path, str]:
        """Write ``text`` as a playbook and run it; returns its output folder and output."""
        out = self.work / f"out-{name}"
        out.mkdir()
        playbook = self.work / f"{name}.yml"
        playbook.write_text(text)
        extra = {
            "out": str(out),
            "smol_vmm": SMOL_VMM,
            "data_home": str(self.work / "smol-data"),
            "rootfs": str(self.work / "rootfs"),
            "machine_of": "web-dev",
            "upstream": UPSTREAM,
            "resolver": RESOLVER,
            "gateway": GATEWAY,
            "host_address": HOST_ADDRESS,
        }
        proc = self.run("ansible-playbook", str(playbook), "-e", json.dumps(extra), **extra_env)
        return out, proc.stdout + proc.stderr


def _environment(tmp: Path, collections: Path, venv: Path) -> dict[str, str]:
    """This process's environment (the pip proxy settings with it) without anything that
    would point Python or Ansible at the checkout or the development virtualenv."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ANSIBLE_") and key not in dropped
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != DEV_BIN]
    config = tmp / "ansible.cfg"
    config.write_text(
        textwrap.dedent(
            f"""\
            [defaults]
            collections_path = {collections}
            collections_scan_sys_path = false
            interpreter_python = auto_silent
            retry_files_enabled = false
            stdout_callback = default
            nocows = true

            [connection]
            pipelining = true
            """
        )
    )
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        SMOL_CLOUD_TOKEN="must-never-be-used",
    )
    return env


def _check(argv: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    started = time.monotonic()
    assert len(PINNED) == 3 and all("==" in pin for pin in PINNED), PINNED
    tmp = tmp_path_factory.mktemp("tarball")
    assert ROOT not in tmp.resolve().parents
    build, collections, venv, work = tmp / "build", tmp / "collections", tmp / "venv", tmp / "work"
    build.mkdir()
    work.mkdir()
    env = _environment(tmp, collections, venv)

    _check(
        [str(DEV_BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION),
         "--output-path", str(build)],
        cwd=tmp,
    )  # fmt: skip
    (tarball,) = build.glob("botbottle-bottle-*.tar.gz")
    _check(
        [str(DEV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps",
         "-p", str(collections), str(tarball)],
        cwd=tmp, env=env,
    )  # fmt: skip

    # the virtualenv holds nothing but the pins and what they need (no pip either: the
    # development virtualenv's pip installs into it, which saves setting one up)
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    _check(
        [str(DEV_BIN / "pip"), "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-compile", *PINNED],
        cwd=tmp, env=env,
    )  # fmt: skip

    shutil.copytree(ROOT / "examples" / "bottles", work / "bottles")
    for folder, name, text in (("invalid", "broken", INVALID), ("unenforced", "logs", UNENFORCED)):
        (work / folder).mkdir()
        (work / folder / f"{name}.yml").write_text(text)
    (work / "rootfs").mkdir()
    (work / "smol-data").mkdir()
    done = Installed(tarball, collections, venv, work, env, time.monotonic() - started)
    print(f"\ntarball built and installed, virtualenv made in {done.seconds:.1f}s")
    return done


@dataclass
class Played:
    """What the main playbook wrote, and its output."""

    results: dict[str, Any]
    output: str

    def result(self, name: str) -> Any:
        assert self.results.get(name) is not None, (name, self.output)
        return self.results[name]


@pytest.fixture(scope="module")
def played(installed: Installed) -> Played:
    started = time.monotonic()
    out, output = installed.play(PLAYBOOK, "main")
    print(f"\nthe playbook ran in {time.monotonic() - started:.1f}s")
    assert (out / "results.json").exists(), output
    assert "failed=0" in output, output
    return Played(json.loads((out / "results.json").read_text()), output)


def _status(installed: Installed, name: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        [SMOL_VMM, "machine", "status", "--name", name, "--json"],
        env={**installed.env, "XDG_DATA_HOME": str(installed.work / "smol-data")},
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _resolved(work: Path, monkeypatch: pytest.MonkeyPatch, folder: str) -> Any:
    """The checkout's own resolution, from the folder the playbook ran in (messages show
    paths relative to the working directory)."""
    monkeypatch.chdir(work)
    return resolve_all([work / folder])


def test_tarball_and_virtualenv_hold_no_bot_bottle_package(installed: Installed) -> None:
    with tarfile.open(installed.tarball) as tar:
        names = set(tar.getnames())
    for shipped in (
        "schemas/bottle.schema.json",
        "requirements.txt",
        "plugins/lookup/bottle_manifest.py",
        "plugins/plugin_utils/_manifest.py",
        "plugins/filter/policy.py",
        "plugins/modules/smolmachine.py",
    ):
        assert shipped in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    manifest = json.loads(
        (installed.collections / "ansible_collections/botbottle/bottle/MANIFEST.json").read_text()
    )
    assert manifest["collection_info"]["dependencies"] == {"community.docker": ">=4.8.0"}

    proc = installed.run("python", "-c", "import botbottle")
    assert proc.returncode == 1, proc
    assert "ModuleNotFoundError: No module named 'botbottle'" in proc.stderr
    proc = installed.run("python", "-c", INSPECT)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["importable"] == {
        "ansible_collections.botbottle": False,
        "ansible": True,
        "jsonschema": True,
        "yaml": True,
    }
    assert {"ansible-core", "jsonschema", "pyyaml"} <= set(seen["packages"]), seen
    assert not {"ansible", "bot-bottle", "pip", "smolmachines", "docker"} & set(seen["packages"])

    # Ansible sees one collection, from the tarball (and ansible-core's internal one)
    listing = installed.run("ansible-galaxy", "collection", "list", "--format", "json")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    where = {name: path for path, names in json.loads(listing.stdout).items() for name in names}
    assert sorted(where) == ["ansible._protomatter", "botbottle.bottle"], where
    assert where["botbottle.bottle"] == str(installed.collections / "ansible_collections")
    assert where["ansible._protomatter"].startswith(str(installed.venv / "lib"))
    doc = installed.run("ansible-doc", "-t", "lookup", "-j", "botbottle.bottle.bottle_manifest")
    assert doc.returncode == 0, doc.stdout + doc.stderr
    filename = json.loads(doc.stdout)["botbottle.bottle.bottle_manifest"]["doc"]["filename"]
    assert filename.startswith(str(installed.collections)), filename


def test_lookup_resolves_the_examples_as_the_checkout_does(
    installed: Installed, played: Played, monkeypatch: pytest.MonkeyPatch
) -> None:
    bottles, problems = _resolved(installed.work, monkeypatch, "bottles")
    assert problems == []
    assert [p for b in bottles for p in backend_problems(b, "docker")] == []
    expected = json.loads(json.dumps([bottle_record(b) for b in bottles]))
    got = played.result("bottles")
    assert [b["name"] for b in got] == ["base", "python-dev", "web-dev"]
    assert [b["policy"]["hash"] for b in got] == [b.policy.digest for b in bottles]
    assert all(b["policy"]["hash"].startswith("sha256:") for b in got)
    assert got == expected
    # the README.md next to the manifests is skipped with a warning, not an error
    assert "bottle_manifest:" in played.output and "README.md" in played.output


def test_invalid_manifest_fails_the_lookup_with_file_key_and_fix(
    installed: Installed, played: Played, monkeypatch: pytest.MonkeyPatch
) -> None:
    bottles, problems = _resolved(installed.work, monkeypatch, "invalid")
    assert bottles == [] and len(problems) == 1
    expected = problems[0].format()
    assert expected.startswith("invalid/broken.yml:5: $.egress.routes[0].hots: unknown key")
    assert "did you mean 'host'?" in expected
    failure = played.result("invalid")
    assert failure["failed"] is True
    assert "invalid bottle manifests:" in failure["msg"]
    assert expected in failure["msg"], failure["msg"]


def test_key_the_backend_does_not_enforce_fails_the_lookup(
    installed: Installed, played: Played, monkeypatch: pytest.MonkeyPatch
) -> None:
    bottles, problems = _resolved(installed.work, monkeypatch, "unenforced")
    assert problems == [] and [b.name for b in bottles] == ["logs"]
    refusals = [p.format() for p in backend_problems(bottles[0], "smolmachines")]
    assert len(refusals) == 1 and refusals[0].startswith("unenforced/logs.yml:4: $.egress.log")
    assert backend_problems(bottles[0], "docker") == []
    failure = played.result("unenforced")
    assert failure["failed"] is True
    assert refusals[0] in failure["msg"], failure["msg"]


def test_policy_filters_render_what_the_checkout_renders(played: Played) -> None:
    bottles = played.result("bottles")
    rendered = played.result("filters")
    policies = [policy_from_dict(b["policy"]) for b in bottles]
    assert rendered["egress_policy"] == [compile_policy(b["manifest"]).to_dict() for b in bottles]
    assert rendered["egress_policy"] == [b["policy"] for b in bottles]
    assert rendered["smolvm_allow"] == [render_smolvm(p) for p in policies]
    assert rendered["dnsmasq_lines"] == [render_dnsmasq(p, [UPSTREAM]) for p in policies]
    assert rendered["firewall_rules"] == [
        render_firewall(p, RESOLVER, GATEWAY, host_addresses=[HOST_ADDRESS]) for p in policies
    ]
    web = rendered["smolvm_allow"][2]
    assert "*.githubusercontent.com" in web["allow_hosts"] and web["network"] is True
    assert any(
        f"server=/registry.npmjs.org/{UPSTREAM}" == line for line in rendered["dnsmasq_lines"][2]
    )


def test_smolmachine_manages_real_records(installed: Installed, played: Played) -> None:
    web = next(b for b in played.result("bottles") if b["name"] == "web-dev")
    assert web["object"] == "bottle-web-dev"
    first, again = played.result("created")
    assert first["changed"] is True and first["actions"] == ["create"], first
    assert again["changed"] is False and again["actions"] == [], again

    # the record as smolvm's CLI reads it, between create and absent
    record = json.loads(played.result("status"))
    allow = render_smolvm(policy_from_dict(web["policy"]))
    assert record["name"] == "bottle-web-dev"
    assert sorted(record["allowed_hosts"]) == sorted(allow["allow_hosts"])
    assert "*.githubusercontent.com" in record["allowed_hosts"]
    assert record["allowed_cidrs"] == allow["allow_cidrs"] == ["203.0.113.0/24"]
    assert record["network"] is True and record["state"] == "created"
    assert record["cmd"] == ["sleep", "infinity"]
    assert record["labels"]["botbottle.managed-by"] == "bot-bottle"
    assert record["labels"]["botbottle.policy"] == web["policy"]["hash"]

    info = played.result("smolmachine_info")
    assert [m["name"] for m in info["machines"]] == ["bottle-web-dev"]
    assert sorted(info["machines"][0]["config"]["allow_hosts"]) == sorted(allow["allow_hosts"])
    assert info["machines"][0]["config"]["env"] == {"TZ": "********"}

    gone, again_gone = played.result("removed")
    assert gone["changed"] is True and gone["actions"] == ["delete"], gone
    assert again_gone["changed"] is False, again_gone
    assert _status(installed, "bottle-web-dev") is None


def test_lookup_without_jsonschema_says_what_to_install(installed: Installed) -> None:
    # jsonschema made unimportable in the controller's Python, as if not installed
    hide = installed.work / "no-jsonschema"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['jsonschema'] = None\n")
    out, output = installed.play(LOOKUP_ONLY, "no-jsonschema", PYTHONPATH=str(hide))
    assert (out / "lookup.json").exists(), output
    failure = json.loads((out / "lookup.json").read_text())
    assert "needs the Python packages jsonschema and PyYAML on the controller" in failure["msg"]
    assert "pip install -r requirements.txt" in failure["msg"]
    assert "jsonschema" in failure["msg"] and "bot-bottle" not in failure["msg"]

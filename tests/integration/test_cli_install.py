"""A non-editable install of the `bottle` CLI works on its own (issue 15).

``pip install`` of the checkout (not ``-e``) into a fresh virtualenv; then, from a
folder outside the checkout and with nothing in the environment pointing at it (no
ANSIBLE_CONFIG, no collections path, no checkout virtualenv on PATH), the installed
``bottle`` validates and plans copies of the example bottles, and brings one Docker
bottle up and down with the playbooks, roles and plugins it carries as package data.

pip builds a local folder in place (it would leave ``build/`` in the checkout, and a
stale ``build/lib`` would ship files the checkout no longer packages), so the test
installs a copy of the checkout's files (tracked and untracked, not ignored) and
deletes that copy once installed: whatever runs afterwards can only come from the
virtualenv. Installing reaches PyPI through the configured proxy (the only traffic
that leaves this machine); the bottle's egress network is the test's own, internal,
with a fake upstream resolver on its gateway (this machine), as in
test_bottle_cli_docker.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import render_smolvm
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import resolve_all
from tests.helpers import (
    ROOT,
    docker_host,
    egress_network,
    require_docker,
    require_images,
    write_inventory,
)
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NAME = "bbinstall"  # the bottle; its objects are bottle-bbinstall[-resolver|-net|-proxy]
CONTAINERS = [f"bottle-{NAME}{suffix}" for suffix in ("", "-resolver", "-net", "-proxy")]
NETWORK = "bbinstall-egress"
SUBNET = "172.29.240.0/24"  # free: grep -rn "172.29." tests molecule examples
GATEWAY = "172.29.240.1"
SUBNET_POOL = "172.28.242.0/24"  # the bottle network's /28 (172.28.240/241 are other tests')
SECRET = "bb-install-secret-7d2e"

#: seconds each step took, printed by the tests (run pytest with -s or -rA to see them)
TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # the user's folder, outside the checkout
    env: dict[str, str]

    @property
    def site_packages(self) -> Path:
        [found] = self.venv.glob("lib/python3*/site-packages")
        return found

    def bottle(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """The installed ``bottle``, by its path (the virtualenv is not activated)."""
        return subprocess.run(
            [str(self.venv / "bin" / "bottle"), *args],
            cwd=self.work,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )

    def python(self, code: str) -> str:
        proc = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def _user_env(work: Path) -> dict[str, str]:
    """This environment as a user outside the checkout has it: no ANSIBLE_* settings,
    no virtualenv, and nothing (PATH entries included) that names the checkout."""
    root = str(ROOT.resolve())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ANSIBLE_")
        and key not in {"BOTTLE_DEBUG", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
        and root not in value
        and str(ROOT) not in value
    }
    env["PATH"] = os.pathsep.join(
        part
        for part in os.environ.get("PATH", "").split(os.pathsep)
        if part and not _inside(part, ROOT)
    )
    env["PWD"] = str(work)
    env["BOTTLE_ARTIFACTS_DIR"] = str(work / "runs")
    return env


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as they are now (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for raw in listed.split(b"\0"):
        if not raw:
            continue
        source = ROOT / os.fsdecode(raw)
        if not source.is_file():  # deleted in the working tree
            continue
        target = dest / os.fsdecode(raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    assert not _inside(base, ROOT)
    source = base / "source"
    _copy_checkout(source)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    assert not _inside(venv / "bin" / "python", ROOT)  # the base interpreter, not .venv's
    started = time.monotonic()
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(source)],
        cwd=base,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    TIMINGS["pip install"] = time.monotonic() - started
    print(f"\npip install . into a fresh virtualenv: {TIMINGS['pip install']:.1f}s")
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    shutil.rmtree(source)  # from here on, only the virtualenv holds the package

    work = base / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples" / "bottles", work / "bottles")
    return Installed(venv=venv, work=work, env=_user_env(work))


def test_the_install_is_not_editable_and_holds_the_collection(installed: Installed) -> None:
    site = installed.site_packages
    where = json.loads(
        installed.python(
            "import json, botbottle, botbottle._paths as p, ansible_collections.community.docker"
            " as d\n"
            "print(json.dumps({'package': botbottle.__file__, 'collection': str(p.COLLECTION_DIR),"
            " 'playbooks': str(p.PLAYBOOKS_DIR), 'cfg': str(p.ANSIBLE_CFG),"
            " 'collections_path': p.ansible_env()['ANSIBLE_COLLECTIONS_PATH'],"
            " 'community_docker': list(d.__path__)[0]}))"
        )
    )
    for key in ("package", "collection", "playbooks", "cfg", "community_docker"):
        assert _inside(where[key], site), (key, where[key])
    assert where["collections_path"].split(":")[0] == str(site.resolve())
    collection = Path(where["collection"])
    for shipped in (
        "galaxy.yml",
        "meta/runtime.yml",
        "schemas/bottle.schema.json",
        "playbooks/site.yml",
        "playbooks/status.yml",
        "roles/docker_bottle_example/tasks/main.yml",
        "plugins/modules/docker_bottle.py",
        "plugins/lookup/bottle_manifest.py",
    ):
        assert (collection / shipped).is_file(), shipped
    assert Path(where["cfg"]).is_file()
    # no editable hook: no .pth file or install record points at a source folder
    for pth in site.glob("*.pth"):
        assert "bot" not in pth.name.lower() and str(ROOT) not in pth.read_text(), pth
    [record] = site.glob("bot_bottle-*.dist-info/direct_url.json")
    assert not json.loads(record.read_text()).get("dir_info", {}).get("editable")


def test_validate(installed: Installed) -> None:
    proc = installed.bottle("validate", "bottles")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, file in (
        ("base", "bottles/base.yml"),
        ("python-dev", "bottles/python-dev.yml"),
        ("web-dev", "bottles/web-dev.md"),
    ):
        assert f"ok  {name:<20} {file}" in proc.stdout
    assert "3 bottle(s) valid, 0 error(s)" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_validate_refuses_an_invalid_manifest(installed: Installed) -> None:
    bad = installed.work / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "typo.yml").write_text(
        "runtime:\n  command: [sleep, infinity]\negress:\n  routes:\n    - hots: a.example\n"
    )
    proc = installed.bottle("validate", "bad")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "error: bad/typo.yml:5: $.egress.routes[0].hots: unknown key 'hots' "
        "(fix: did you mean 'host'?" in proc.stderr
    )
    assert "0 bottle(s) valid, 1 error(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_is_the_checkouts_policy(installed: Installed) -> None:
    """The installed CLI compiles what the checkout's own compiler does."""
    proc = installed.bottle("plan", "bottles", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["valid"] and not plan["errors"]
    expected, problems = resolve_all([installed.work / "bottles"])
    assert not problems
    assert [e["name"] for e in plan["bottles"]] == [b.name for b in expected]
    assert len(expected) == 3
    for entry, bottle in zip(plan["bottles"], expected, strict=True):
        assert entry["policy"] == json.loads(json.dumps(bottle.policy.to_dict()))
        assert entry["render"]["smolmachines"] == json.loads(
            json.dumps(render_smolvm(bottle.policy))
        )
        assert entry["policy"]["hash"].startswith("sha256:")
    text = installed.bottle("plan", "bottles")
    assert text.returncode == 0, text.stdout + text.stderr
    for bottle in expected:
        assert f"bottle {bottle.name}  (bottles/" in text.stdout
        assert bottle.policy.to_dict()["hash"] in text.stdout


# --------------------------------------------------------------------------- Docker


@pytest.fixture(scope="module")
def inventory(installed: Installed) -> Iterator[Path]:
    require_docker()
    require_images()
    work = installed.work
    (work / "up").mkdir()
    (work / "up" / f"{NAME}.yml").write_text(
        "description: one bottle of the installed CLI\n"
        "env:\n  TOKEN: ${BB_INSTALL_TOKEN}\n"
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: install.bbtest.example\n"
    )
    with egress_network(NETWORK, SUBNET, GATEWAY, work / "upstream.log") as port:
        host = docker_host(
            [{"manifest": f"up/{NAME}.yml"}],
            NETWORK,
            f"{GATEWAY}#{port}",
            docker_bottle_subnet_pool=SUBNET_POOL,
            # `up` ends with bottle verify: its literal resolver is this test's, on this machine
            bottle_verify_resolvers=[f"{GATEWAY}#{port}"],
            bottle_verify_audit_dir=str(work / "audit"),
        )
        path = write_inventory(work / "inventory.yml", host)
        try:
            yield path
        finally:
            installed.bottle("down", "-i", path.name, BB_INSTALL_TOKEN=SECRET)
            # whatever a failed run left behind
            _docker("rm", "-f", *CONTAINERS)
            _docker("network", "rm", f"bottle-{NAME}")


def _exists(*what: str) -> bool:
    return _docker(*what[:-1], "inspect", what[-1]).returncode == 0


def _policy_hash(installed: Installed) -> str:
    """The bottle's policy as the checkout's own compiler has it."""
    [bottle], problems = resolve_all([installed.work / "up" / f"{NAME}.yml"])
    assert not problems
    digest: str = bottle.policy.to_dict()["hash"]
    return digest


def _artifacts(proc: subprocess.CompletedProcess[str], installed: Installed) -> str:
    """The text of a run's job events (the run's artifacts folder, printed last)."""
    folder = Path(proc.stdout.split("artifacts: ", 1)[1].splitlines()[0])
    assert _inside(folder, installed.work)
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*.json"))


def test_plan_of_an_inventory_touches_nothing(installed: Installed, inventory: Path) -> None:
    proc = installed.bottle("plan", "-i", inventory.name, BB_INSTALL_TOKEN=SECRET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok      localhost: 1 change(s)" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert _policy_hash(installed) in _artifacts(proc, installed)
    for container in CONTAINERS:
        assert not _exists("container", container), container
    assert not _exists("network", f"bottle-{NAME}")


def test_up_status_down(installed: Installed, inventory: Path) -> None:
    started = time.monotonic()
    up = installed.bottle("up", "-i", inventory.name, BB_INSTALL_TOKEN=SECRET)
    TIMINGS["bottle up"] = time.monotonic() - started
    print(f"\nbottle up (installed CLI): {TIMINGS['bottle up']:.1f}s")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "changed" in up.stdout
    assert SECRET not in up.stdout + up.stderr
    # the run used the installed collection's playbooks and roles, never the checkout's
    events = _artifacts(up, installed)
    assert f"{installed.site_packages}/ansible_collections/botbottle/bottle/roles/" in events
    assert str(ROOT) not in events

    for container in CONTAINERS:
        assert _exists("container", container), container
    running = _docker("ps", "--filter", f"label=botbottle.bottle={NAME}", "--format", "{{.Names}}")
    assert sorted(running.stdout.split()) == sorted(CONTAINERS)
    assert _docker("exec", f"bottle-{NAME}", "printenv", "TOKEN").stdout.strip() == SECRET
    subnet = _docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", f"bottle-{NAME}"
    ).stdout.strip()
    assert subnet.startswith("172.28.242."), subnet

    status = installed.bottle("status", "-i", inventory.name, "--format", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    [row] = json.loads(status.stdout)["hosts"]["localhost"]
    assert row["bottle"] == NAME and row["backend"] == "docker"
    assert row["state"] == "running" and row["policy"] == _policy_hash(installed)

    started = time.monotonic()
    down = installed.bottle("down", "-i", inventory.name)
    TIMINGS["bottle down"] = time.monotonic() - started
    print(f"bottle down (installed CLI): {TIMINGS['bottle down']:.1f}s")
    assert down.returncode == 0, down.stdout + down.stderr
    for container in CONTAINERS:
        assert not _exists("container", container), container
    assert not _exists("network", f"bottle-{NAME}")
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))

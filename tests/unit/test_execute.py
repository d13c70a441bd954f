"""`bottle exec` / `bottle shell`: which host, how to reach it, which backend, the argv.

Everything here is pure (the inventory in, an argv out) except the quoting checks,
which hand ssh's remote command to a local /bin/sh, and the CLI tests, which read
real inventory files with ansible-inventory; no command ever runs in a bottle.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from botbottle import cli, execute
from botbottle.execute import ExecError, Target, Transport

SEALED = (0, "bot-bottle-sealed\n", "")
RUNNING = (0, "running\n", "")
NO_CONTAINER = (1, "", "Error response from daemon: No such container: bottle-web\n")
SMOL_RUNNING = (0, json.dumps({"name": "bottle-web", "state": "running"}), "")
SMOL_STOPPED = (0, json.dumps({"name": "bottle-web", "state": "stopped"}), "")
SMOL_MISSING = (
    1,
    "",
    '{"error":{"code":"CONFIG_ERROR","message":"machine status: machine \'bottle-web\' '
    'not found"}}\n',
)


def target(backend: str = "docker", transport: Transport | None = None, **more: Any) -> Target:
    return Target(
        host="h1",
        bottle="web",
        backend=backend,
        transport=transport or Transport("local"),
        **more,
    )


# --------------------------------------------------------------------------- transport


def test_local_connection_and_implicit_localhost() -> None:
    assert execute.transport_for("box", {"ansible_connection": "local"}) == Transport("local")
    assert execute.transport_for("localhost", {}) == Transport("local")
    assert execute.transport_for("127.0.0.1", {}).kind == "local"
    # localhost with an explicit ssh connection is reached over ssh, as Ansible does
    assert execute.transport_for("localhost", {"ansible_connection": "ssh"}).kind == "ssh"


def test_ssh_is_the_default_and_reads_the_ansible_variables() -> None:
    assert execute.transport_for("agent-1", {}) == Transport("ssh", address="agent-1")
    transport = execute.transport_for(
        "agent-1",
        {
            "ansible_host": "10.0.0.7",
            "ansible_user": "ops",
            "ansible_port": 2222,
            "ansible_ssh_private_key_file": "/keys/id ops",
            "ansible_ssh_common_args": "-o ProxyJump=bastion",
            "ansible_ssh_extra_args": "-o 'UserKnownHostsFile=/k h'",
        },
    )
    assert transport == Transport(
        "ssh",
        address="10.0.0.7",
        user="ops",
        port=2222,
        options=(
            "-i",
            "/keys/id ops",
            "-o",
            "ProxyJump=bastion",
            "-o",
            "UserKnownHostsFile=/k h",
        ),
    )
    legacy = execute.transport_for(
        "a", {"ansible_connection": "paramiko", "ansible_ssh_host": "h", "ansible_ssh_user": "u"}
    )
    assert (legacy.kind, legacy.address, legacy.user) == ("ssh", "h", "u")


def test_docker_connection_names_the_host_container() -> None:
    assert execute.transport_for("bbfleet-1", {"ansible_connection": "docker"}) == Transport(
        "docker", address="bbfleet-1"
    )
    transport = execute.transport_for(
        "node",
        {
            "ansible_connection": "community.docker.docker",
            "ansible_host": "ctr-a",
            "ansible_docker_host": "ctr-b",
            "ansible_user": "ops",
            "ansible_docker_extra_args": "-H unix:///run/other.sock",
        },
    )
    assert transport == Transport(
        "docker", address="ctr-b", user="ops", options=("-H", "unix:///run/other.sock")
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ansible_connection": "winrm"}, "ansible_connection winrm is not supported"),
        ({"ansible_host": "{{ lookup('env', 'H') }}"}, "ansible_host is a template"),
        ({"ansible_port": "ssh"}, "ansible_port 'ssh' is not a number"),
        ({"ansible_become": True, "ansible_become_method": "su"}, "method su is not supported"),
    ],
)
def test_hosts_bottle_exec_cannot_reach_are_bad_input(
    variables: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExecError) as caught:
        execute.transport_for("h1", variables)
    assert caught.value.code == 2
    assert message in caught.value.message


def test_become_runs_the_host_side_through_sudo() -> None:
    transport = execute.transport_for(
        "h", {"ansible_connection": "local", "ansible_become": "yes", "ansible_become_user": "bb"}
    )
    assert execute.wrap(transport, ["docker", "ps"], tty=False) == [
        "sudo",
        "-u",
        "bb",
        "--",
        "docker",
        "ps",
    ]
    assert execute.transport_for("h", {"ansible_become": True}).become_user == "root"
    assert execute.transport_for("h", {"ansible_become": "false"}).become_user == ""


def test_wrap_local_ssh_docker() -> None:
    argv = ["docker", "exec", "-i", "bottle-web", "id"]
    assert execute.wrap(Transport("local"), argv, tty=True) == argv
    ssh = Transport("ssh", address="10.0.0.7", user="ops", port=2222, options=("-i", "/k"))
    assert execute.wrap(ssh, argv, tty=True) == [
        "ssh",
        "-t",
        "-i",
        "/k",
        "-p",
        "2222",
        "-l",
        "ops",
        "--",
        "10.0.0.7",
        "docker exec -i bottle-web id",
    ]
    assert execute.wrap(Transport("ssh", address="h"), argv, tty=False)[:2] == ["ssh", "-T"]
    host = Transport("docker", address="bbfleet-1", user="ops", options=("-H", "tcp://x"))
    assert execute.wrap(host, argv, tty=True) == [
        "docker",
        "-H",
        "tcp://x",
        "exec",
        "-i",
        "-t",
        "-u",
        "ops",
        "bbfleet-1",
        *argv,
    ]
    assert execute.wrap(Transport("docker", address="c"), ["id"], tty=False) == [
        "docker",
        "exec",
        "-i",
        "c",
        "id",
    ]


TRICKY = [
    "two words",
    "$HOME",
    "'single'",
    '"double"',
    "a;b && c | d",
    "`x`",
    "*",
    "",
    "line\nbreak",
    "-e",
    "ünï",
]


def test_ssh_remote_command_survives_the_remote_shell() -> None:
    """ssh gives its remote command to the login shell as one string: every word must
    come out of `sh -c` exactly as it went in."""
    argv = execute.wrap(Transport("ssh", address="h"), ["printf", "%s\\0", *TRICKY], tty=False)
    remote = argv[-1]
    proc = subprocess.run(["/bin/sh", "-c", remote], capture_output=True, check=True)
    assert proc.stdout.decode().split("\0")[:-1] == TRICKY


def test_ssh_remote_command_of_a_smolmachines_exec_survives_the_remote_shell(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "smolvm"
    fake.write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    fake.chmod(0o755)
    machine = target(
        "smolmachines",
        Transport("ssh", address="h"),
        smolvm_binary=str(fake),
        smolvm_data_home="/var/lib/smol data",
        user="agent user",
    )
    remote = execute.command_argv(machine, "smolmachines", TRICKY, tty=False)[-1]
    proc = subprocess.run(["/bin/sh", "-c", remote], capture_output=True, check=True)
    words = proc.stdout.decode().split("\0")[:-1]
    assert words == [
        "machine",
        "exec",
        "--name",
        "bottle-web",
        "--user",
        "agent user",
        "-i",
        "--",
        *TRICKY,
    ]


# --------------------------------------------------------------------------- backends


def _only_env_and_sh(folder: Path) -> Path:
    """A PATH folder with env and sh, and no smolvm."""
    folder.mkdir()
    for tool in ("env", "sh"):
        (folder / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    return folder


def test_docker_backend_argv() -> None:
    assert execute.backend_argv(target(), "docker", ["sh", "-c", "id -u"], tty=False) == [
        "docker",
        "exec",
        "-i",
        "bottle-web",
        "sh",
        "-c",
        "id -u",
    ]
    assert execute.backend_argv(target(), "docker", ["bash"], tty=True)[:5] == [
        "docker",
        "exec",
        "-i",
        "-t",
        "bottle-web",
    ]
    # no --user: docker exec runs as the container's configured user (runtime.user)
    assert "--user" not in execute.backend_argv(target(user="u"), "docker", ["id"], tty=False)


def test_smolmachines_backend_argv_finds_smolvm_like_the_modules() -> None:
    argv = execute.backend_argv(target("smolmachines"), "smolmachines", ["id"], tty=True)
    assert argv == [
        "env",
        "-u",
        "SMOL_CLOUD_TOKEN",
        "-u",
        "SMOL_API_KEY",
        "-u",
        "SMOL_CLOUD_URL",
        "-u",
        "SMOL_TARGET",
        "sh",
        "-c",
        execute.SMOLVM_LOCATOR,
        "bottle-smolvm",
        "/opt/bot-bottle/smolmachines",
        "machine",
        "exec",
        "--name",
        "bottle-web",
        "-i",
        "-t",
        "--",
        "id",
    ]
    pinned = target(
        "smolmachines", smolvm_binary="/usr/bin/smolvm", smolvm_data_home="/srv/smol", user="1000"
    )
    argv = execute.backend_argv(pinned, "smolmachines", ["id"], tty=False)
    assert argv[9:] == [
        "XDG_DATA_HOME=/srv/smol",
        "/usr/bin/smolvm",
        "machine",
        "exec",
        "--name",
        "bottle-web",
        "--user",
        "1000",
        "-i",
        "--",
        "id",
    ]


def test_the_smolvm_locator_picks_the_virtualenv_binary_as_the_modules_do(tmp_path: Path) -> None:
    """The last match in sorted order (module_utils _smolvm.find_binary), else PATH."""
    for version in ("3.9", "3.11"):
        binary = tmp_path / "lib" / f"python{version}" / "site-packages" / "smol" / "smol-vmm"
        binary.parent.mkdir(parents=True)
        binary.write_text(f'#!/bin/sh\necho {version} "$@"\n')
        binary.chmod(0o755)
    machine = target("smolmachines", smolvm_venv=str(tmp_path))
    argv = execute.state_argv(machine, "smolmachines")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.stdout.split() == [
        "3.9",  # python3.11 < python3.9, as sorted() has them
        "machine",
        "status",
        "--name",
        "bottle-web",
        "--json",
        "--error-format",
        "json",
    ]
    empty = target("smolmachines", smolvm_venv=str(tmp_path / "none"))
    proc = subprocess.run(
        execute.state_argv(empty, "smolmachines"),
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": str(_only_env_and_sh(tmp_path / "bin"))},
    )
    assert proc.returncode == 127 and "no smolvm CLI on this host" in proc.stderr


CLOUD = [
    "-u",
    "SMOL_CLOUD_TOKEN",
    "-u",
    "SMOL_API_KEY",
    "-u",
    "SMOL_CLOUD_URL",
    "-u",
    "SMOL_TARGET",
]
DOCKER_EXEC = ["docker", "exec", "-i", "bottle-web", "id"]
SMOL_EXEC = [
    "env",
    *CLOUD,
    "XDG_DATA_HOME=/d",
    "smolvm",
    "machine",
    "exec",
    "--name",
    "bottle-web",
    "-i",
    "--",
    "id",
]


@pytest.mark.parametrize(
    ("transport", "backend", "expected"),
    [
        ("local", "docker", DOCKER_EXEC),
        ("ssh", "docker", ["ssh", "-T", "--", "h1", " ".join(DOCKER_EXEC)]),
        ("docker", "docker", ["docker", "exec", "-i", "h1", *DOCKER_EXEC]),
        ("local", "smolmachines", SMOL_EXEC),
        ("ssh", "smolmachines", ["ssh", "-T", "--", "h1", " ".join(SMOL_EXEC)]),
        ("docker", "smolmachines", ["docker", "exec", "-i", "h1", *SMOL_EXEC]),
    ],
)
def test_every_transport_with_every_backend(
    transport: str, backend: str, expected: list[str]
) -> None:
    machine = target(
        backend,
        Transport(transport, address="" if transport == "local" else "h1"),
        smolvm_binary="smolvm",
        smolvm_data_home="/d",
    )
    assert execute.command_argv(machine, backend, ["id"], tty=False) == expected


def test_tty_reaches_every_level() -> None:
    machine = target("docker", Transport("ssh", address="h1"))
    argv = execute.command_argv(machine, "docker", ["bash"], tty=True)
    assert argv == ["ssh", "-t", "--", "h1", "docker exec -i -t bottle-web bash"]
    nested = target("docker", Transport("docker", address="h1"))
    assert execute.command_argv(nested, "docker", ["bash"], tty=True) == [
        "docker",
        "exec",
        "-i",
        "-t",
        "h1",
        "docker",
        "exec",
        "-i",
        "-t",
        "bottle-web",
        "bash",
    ]


def test_an_empty_command_is_bad_input() -> None:
    with pytest.raises(ExecError) as caught:
        execute.backend_argv(target(), "docker", [], tty=False)
    assert caught.value.code == 2


def test_shell_prefers_bash_and_keeps_the_bottles_env() -> None:
    assert execute.SHELL_ARGV[0] == "/bin/sh"
    script = execute.SHELL_ARGV[2]
    assert "exec bash" in script and script.endswith("exec sh")
    assert "-l" not in execute.SHELL_ARGV  # a login shell's /etc/profile would reset PATH


# --------------------------------------------------------------------------- state


def test_parse_docker_state() -> None:
    assert execute.parse_state("docker", *RUNNING) == "running"
    assert execute.parse_state("docker", 0, "exited\n", "") == "exited"
    assert execute.parse_state("docker", *NO_CONTAINER) == "absent"
    with pytest.raises(ExecError) as caught:
        execute.parse_state("docker", 1, "", "Cannot connect to the Docker daemon\n")
    assert caught.value.code == 1 and "cannot ask Docker" in caught.value.message


def test_parse_smolvm_state() -> None:
    assert execute.parse_state("smolmachines", *SMOL_RUNNING) == "running"
    assert execute.parse_state("smolmachines", *SMOL_STOPPED) == "stopped"
    assert execute.parse_state("smolmachines", *SMOL_MISSING) == "absent"
    with pytest.raises(ExecError):
        execute.parse_state("smolmachines", 0, "garbage", "")
    with pytest.raises(ExecError) as caught:
        execute.parse_state(
            "smolmachines", 127, "", "bottle: no smolvm CLI on this host (looked in /opt)\n"
        )
    assert "no smolvm CLI" in caught.value.message


class Host:
    """A fake host: answers the probes from a table, records what ran."""

    def __init__(self, answers: dict[str, tuple[int, str, str]], code: int = 0) -> None:
        self.answers = answers
        self.code = code
        self.probed: list[list[str]] = []
        self.ran: list[list[str]] = []

    def probe(self, argv: Sequence[str]) -> tuple[int, str, str]:
        self.probed.append(list(argv))
        text = " ".join(argv)
        for key, answer in self.answers.items():
            if key in text:
                return answer
        raise AssertionError(f"unexpected probe {argv}")

    def execute(self, argv: Sequence[str]) -> int:
        self.ran.append(list(argv))
        return self.code


def run(machine: Target, host: Host, command: Sequence[str] = ("id",)) -> int:
    return execute.run(
        machine, command, "inv.yml", tty=False, probe=host.probe, execute=host.execute
    )


def test_run_returns_the_commands_exit_code() -> None:
    host = Host({"inspect": RUNNING, "/sys/class/net/lo/ifalias": SEALED}, code=7)
    assert run(target(), host, ["sh", "-c", "exit 7"]) == 7
    assert host.ran == [["docker", "exec", "-i", "bottle-web", "sh", "-c", "exit 7"]]
    assert host.probed[1] == [
        "docker",
        "exec",
        "bottle-web",
        "/.bot-bottle/busybox",
        "cat",
        "/sys/class/net/lo/ifalias",
    ]


@pytest.mark.parametrize(
    ("backend", "answers", "said"),
    [
        ("docker", {"inspect": (0, "exited\n", "")}, "(docker: it is exited)"),
        ("docker", {"inspect": NO_CONTAINER}, "(docker: it does not exist)"),
        ("smolmachines", {"status": SMOL_STOPPED}, "(smolmachines: it is stopped)"),
        ("smolmachines", {"status": SMOL_MISSING}, "(smolmachines: it does not exist)"),
        ("auto", {"inspect": NO_CONTAINER, "status": SMOL_MISSING}, "does not exist"),
    ],
)
def test_a_bottle_that_is_not_running_exits_1_and_says_how_to_start_it(
    backend: str, answers: dict[str, tuple[int, str, str]], said: str
) -> None:
    host = Host(answers)
    with pytest.raises(ExecError) as caught:
        run(target(backend), host)
    assert caught.value.code == 1
    assert (
        "bottle web is not running on h1" in caught.value.message and said in caught.value.message
    )
    assert "bottle up -i inv.yml --limit h1" in caught.value.message
    assert host.ran == []


def test_an_unsealed_docker_bottle_runs_nothing() -> None:
    host = Host({"inspect": RUNNING, "ifalias": (0, "\n", "")})
    with pytest.raises(ExecError) as caught:
        run(target(), host)
    assert caught.value.code == 1 and "not sealed" in caught.value.message
    assert host.ran == []


def test_auto_uses_docker_when_docker_holds_the_agent() -> None:
    host = Host({"inspect": RUNNING, "ifalias": SEALED})
    assert run(target("auto", smolvm_binary="smolvm"), host) == 0
    assert host.ran[0][:2] == ["docker", "exec"]


@pytest.mark.parametrize(
    "docker_answer",
    [NO_CONTAINER, (127, "", "[Errno 2] No such file or directory: 'docker'")],
)
def test_auto_uses_smolmachines_otherwise(docker_answer: tuple[int, str, str]) -> None:
    host = Host({"inspect": docker_answer, "status": SMOL_RUNNING})
    assert run(target("auto", smolvm_binary="smolvm"), host) == 0
    assert host.ran == [
        ["env", *CLOUD, "smolvm", "machine", "exec", "--name", "bottle-web", "-i", "--", "id"]
    ]


def test_a_host_that_cannot_be_reached_exits_1() -> None:
    ssh = target("docker", Transport("ssh", address="h1"))
    host = Host({"inspect": (255, "", "ssh: connect to host h1 port 22: Connection refused\n")})
    with pytest.raises(ExecError) as caught:
        run(ssh, host)
    assert caught.value.code == 1
    assert "cannot reach host h1: ssh: connect to host h1" in caught.value.message
    gone = target("auto", Transport("docker", address="bbfleet-9"))
    host = Host({"inspect": (1, "", "Error response from daemon: No such container: bbfleet-9")})
    with pytest.raises(ExecError) as caught:
        run(gone, host)
    assert "cannot reach host h1" in caught.value.message


# --------------------------------------------------------------------------- choosing the host


def bottle(name: str) -> Any:
    class Named:
        def __init__(self) -> None:
            self.name = name
            self.manifest: dict[str, Any] = {}

    return Named()


def test_choose_host() -> None:
    found = {"a": [bottle("web")], "b": [bottle("web"), bottle("db")], "c": [bottle("api")]}
    assert execute.choose_host(found, "db", "inv.yml", None) == "b"
    # the inventory read with --limit holds only the hosts the pattern selects
    assert execute.choose_host({"a": found["a"]}, "web", "inv.yml", "a") == "a"
    with pytest.raises(ExecError) as caught:
        execute.choose_host(found, "web", "inv.yml", None)
    assert caught.value.code == 2
    assert "declared on 2 hosts of inventory inv.yml: a, b" in caught.value.message
    assert "--limit HOST" in caught.value.message
    with pytest.raises(ExecError) as caught:
        execute.choose_host(found, "nosuch", "inv.yml", "x*")
    assert caught.value.code == 2
    assert caught.value.message == (
        "no host in inventory inv.yml (--limit x*) declares bottle nosuch "
        "(bottles there: api, db, web)"
    )


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def fleet_inventory(tmp_path: Path) -> Path:
    (tmp_path / "web.yml").write_text("env:\n  TOKEN: t\nruntime:\n  user: agent\n")
    (tmp_path / "db.yml").write_text("{}\n")
    hosts = {
        "localhost": {
            "ansible_connection": "local",
            "bottle_backend": "docker",
            "bottles": [{"manifest": "web.yml"}, {"manifest": "db.yml"}],
        },
        "agent-1": {
            "ansible_host": "10.9.9.1",
            "ansible_user": "ops",
            "bottle_backend": "smolmachines",
            "bottle_smolvm_data_home": "/srv/smol",
            "bottle_host_smolvm_binary": "/opt/smolvm",
            "bottles": [{"manifest": "web.yml", "state": "started"}],
        },
    }
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps({"all": {"children": {"g": {"hosts": hosts}}}}))
    return path


def cli_run(monkeypatch: pytest.MonkeyPatch, host: Host, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(execute, "capture", host.probe)
    monkeypatch.setattr(execute, "replace_process", host.execute)
    monkeypatch.setattr(execute, "stdin_is_tty", lambda: False)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_exec_on_the_one_host_that_declares_the_bottle(
    monkeypatch: pytest.MonkeyPatch, fleet_inventory: Path
) -> None:
    host = Host({"inspect": RUNNING, "ifalias": SEALED}, code=3)
    code, out, err = cli_run(
        monkeypatch, host, "exec", "db", "-i", str(fleet_inventory), "--", "sh", "-c", "exit 3"
    )
    assert (code, out, err) == (3, "", "")
    assert host.ran == [["docker", "exec", "-i", "bottle-db", "sh", "-c", "exit 3"]]


def test_cli_exec_needs_limit_when_several_hosts_declare_it(
    monkeypatch: pytest.MonkeyPatch, fleet_inventory: Path
) -> None:
    host = Host({"status": SMOL_RUNNING})
    code, _, err = cli_run(monkeypatch, host, "exec", "web", "-i", str(fleet_inventory), "--", "id")
    assert code == 2
    assert "bottle web is declared on 2 hosts" in err and "agent-1, localhost" in err
    assert host.probed == [] and host.ran == []
    # --limit is Ansible's pattern, evaluated by ansible-inventory
    code, _, err = cli_run(
        monkeypatch,
        host,
        "exec",
        "web",
        "-i",
        str(fleet_inventory),
        "--limit",
        "g:!localhost",
        "--",
        "id",
    )
    assert code == 0, err
    assert host.ran == [
        [
            "ssh",
            "-T",
            "-l",
            "ops",
            "--",
            "10.9.9.1",
            "env -u SMOL_CLOUD_TOKEN -u SMOL_API_KEY -u SMOL_CLOUD_URL -u SMOL_TARGET "
            "XDG_DATA_HOME=/srv/smol /opt/smolvm machine exec --name bottle-web --user agent -i "
            "-- id",
        ]
    ]


def test_cli_shell(monkeypatch: pytest.MonkeyPatch, fleet_inventory: Path) -> None:
    host = Host({"inspect": RUNNING, "ifalias": SEALED})
    code, _, err = cli_run(
        monkeypatch, host, "shell", "web", "-i", str(fleet_inventory), "--limit", "localhost"
    )
    assert code == 0, err
    assert host.ran == [["docker", "exec", "-i", "bottle-web", *execute.SHELL_ARGV]]


def test_cli_exec_bad_input(monkeypatch: pytest.MonkeyPatch, fleet_inventory: Path) -> None:
    host = Host({})
    code, _, err = cli_run(
        monkeypatch, host, "exec", "nosuch", "-i", str(fleet_inventory), "--", "id"
    )
    assert code == 2 and "declares bottle nosuch (bottles there: db, web)" in err
    code, _, err = cli_run(monkeypatch, host, "exec", "db", "-i", str(fleet_inventory))
    assert code == 2 and "needs a command" in err
    missing = str(fleet_inventory.parent / "none.yml")
    code, _, err = cli_run(monkeypatch, host, "exec", "db", "-i", missing, "--", "id")
    assert code == 2 and "not found" in err
    (fleet_inventory.parent / "db.yml").write_text("egres: {}\n")
    code, _, err = cli_run(monkeypatch, host, "exec", "db", "-i", str(fleet_inventory), "--", "id")
    assert code == 2 and "$.egres" in err
    assert host.probed == [] and host.ran == []


def test_split_command_only_for_exec() -> None:
    split = cli._split_command
    assert split(["exec", "web", "-i", "x", "--", "sh", "-c", "a -- b"]) == (
        ["exec", "web", "-i", "x"],
        ["sh", "-c", "a -- b"],
    )
    assert split(["exec", "web", "--"]) == (["exec", "web"], [])
    assert split(["validate", "--", "-odd.yml"]) == (["validate", "--", "-odd.yml"], [])
    assert split(["shell", "web"]) == (["shell", "web"], [])

# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read and change one Docker bottle through the Docker Engine API.

**PRIVATE** to the botbottle.bottle collection. All I/O of the ``docker_bottle``
module lives here; what to do is decided by ``_docker_bottle.plan``. The engine
is reached with the Docker SDK for Python (Debian's ``python3-docker``, or
``docker`` from PyPI) over its socket: one HTTP request per read or change, no
CLI process per step.
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import socket
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import CA_LABEL, ENV_LABEL
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    BOTTLE_LABEL,
    COMPONENT_LABEL,
    EGRESS_LOG_DIR,
    GUARD_BINARY,
    HEALTH_NAME,
    HOLDER_SCRIPT,
    LOG_DIR,
    MANAGED_LABEL,
    MANAGED_VALUE,
    POLICY_LABEL,
    READ_ARGV,
    RELOAD_ARGV,
    RESOLVER_ARGV,
    RULES_DIR,
    SPEC_LABEL,
    ContainerSeen,
    Names,
    Seen,
    Want,
    agent_ca_mounts,
    ca_dir,
    file_digest,
    hardening,
    parse_rules_dump,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    CONTAINER_CODE_ROOT,
    CONTAINER_CONFDIR,
    CONTAINER_CONFIG,
    CONTAINER_LOG_DIR,
    CONTAINER_SECRETS_DIR,
    CONTAINER_TRUSTED_CA,
    PROXY_PORT,
    PROXY_UID,
    SECRETS_FILE_NAME,
    ensure_ca,
    proxy_code_files,
    read_ca,
)

try:
    import docker
    from docker import errors as docker_errors
    from docker.types import IPAMConfig, IPAMPool, Mount

    SDK_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - depends on the managed host
    SDK_ERROR = (
        f"the Docker SDK for Python is missing on this host ({_exc}); install it: "
        "apt-get install python3-docker (Debian), or pip install docker"
    )

_FILES = ("dnsmasq.conf", "resolv.conf", "rules.ipv4", "rules.ipv6", "egress.json")
_HOLDER_CAPS = ["NET_ADMIN", "SETUID", "SETGID"]  # only its start script and docker exec use them
_RESOLVER_CAPS = ["NET_BIND_SERVICE", "SETGID", "SETUID"]


class EngineError(Exception):
    """A Docker operation failed; the message says which and why."""


def connect(base_url: str | None = None, timeout: int = 60) -> Any:
    """An API client for the engine at ``base_url`` (the local socket by default)."""
    if SDK_ERROR is not None:
        raise EngineError(SDK_ERROR)
    try:
        client = docker.APIClient(
            base_url=base_url or "unix:///var/run/docker.sock", version="auto", timeout=timeout
        )
        client.ping()
    except Exception as exc:
        raise EngineError(
            f"Docker does not answer at {base_url or 'unix:///var/run/docker.sock'}: {exc}; "
            "start dockerd (or fix docker_host)"
        ) from None
    return client


def _not_found(exc: Exception) -> bool:
    return SDK_ERROR is None and isinstance(exc, docker_errors.NotFound)


def _inspect(client: Any, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.inspect_container(name)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise
    return found


def _netns(pid: int) -> str:
    if pid <= 0:
        return ""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _container_seen(
    info: Mapping[str, Any] | None,
    env_names: bool = False,
    containers: Mapping[str, str] | None = None,
) -> ContainerSeen | None:
    if info is None:
        return None
    state = info.get("State") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    pid = int(state.get("Pid") or 0)
    status = str(state.get("Status") or "unknown")
    env: tuple[tuple[str, str], ...] = ()
    if env_names:
        names = [n for n in str(labels.get(ENV_LABEL, "")).split(",") if n]
        values = dict(
            item.split("=", 1)
            for item in (info.get("Config") or {}).get("Env") or []
            if "=" in item
        )
        env = tuple(sorted((n, values.get(n, "\x00missing")) for n in names))
    return ContainerSeen(
        status=status,
        spec=str(labels.get(SPEC_LABEL, "")),
        pid=pid,
        netns=_netns(pid) if status == "running" else "",
        env=env,
        hardening=hardening(info.get("HostConfig") or {}, containers) if env_names else {},
        ca=str(labels.get(CA_LABEL, "")),
    )


def exec_in(client: Any, container: str, argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` in a running container; (exit code, output)."""
    created = client.exec_create(container, list(argv), stdout=True, stderr=True)
    output = client.exec_start(created["Id"])
    code = client.exec_inspect(created["Id"]).get("ExitCode")
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return int(code if code is not None else -1), text


def read_files(directory: str) -> dict[str, str]:
    """sha256 of each bottle file present in the state directory."""
    found = {}
    for name in _FILES:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                found[name] = file_digest(handle.read())
        except (OSError, UnicodeDecodeError):
            continue
    return found


def network_subnet(client: Any, name: str) -> str | None:
    try:
        info = client.inspect_network(name)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise
    configs = (info.get("IPAM") or {}).get("Config") or [{}]
    return str(configs[0].get("Subnet") or "") or "unknown"


def used_subnets(client: Any) -> list[str]:
    """Every subnet of every network on the host (to choose a free one)."""
    used = []
    for network in client.networks():
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                used.append(str(config["Subnet"]))
    return used


def read(client: Any, names: Names, directory: str, stamp: str = "") -> Seen:
    """Everything the bottle is made of."""
    holder_info = _inspect(client, names.holder)
    holder = _container_seen(holder_info)
    proxy = _container_seen(_inspect(client, names.proxy))
    ids = {str(holder_info["Id"]): names.holder} if holder_info else {}
    rules_stamp, sealed = "", False
    if holder is not None and holder.running:
        code, text = exec_in(client, names.holder, READ_ARGV)
        if code == 0:
            rules_stamp, sealed = parse_rules_dump(text, stamp)
    return Seen(
        network_subnet=network_subnet(client, names.network),
        resolver=_container_seen(_inspect(client, names.resolver)),
        holder=holder,
        agent=_container_seen(_inspect(client, names.agent), env_names=True, containers=ids),
        proxy=proxy,
        proxy_secrets=read_proxy_secrets(client, names.proxy) if proxy and proxy.running else "",
        ca=_ca_fingerprint(directory),
        rules_stamp=rules_stamp,
        sealed=sealed,
        files=read_files(directory),
    )


def read_proxy_secrets(client: Any, proxy: str) -> str:
    """sha256 of the runtime secrets the running proxy holds ("" when none), computed
    inside the proxy: the engine's archive API does not see its tmpfs, and the value
    never needs to leave it to be compared."""
    path = f"{CONTAINER_SECRETS_DIR}/{SECRETS_FILE_NAME}"
    code, text = exec_in(client, proxy, ["sha256sum", path])
    digest = text.split()[0] if code == 0 and text.split() else ""
    return digest if len(digest) == 64 else ""


def _ca_fingerprint(directory: str) -> str:
    try:
        state = read_ca(ca_dir(directory))
    except (OSError, ValueError):
        return ""
    return state.fingerprint if state is not None else ""


def proxy_code_dir(tools_dir: str) -> tuple[str, dict[str, str]]:
    """Where the proxy's code goes (named after its digest) and the files to write there."""
    files = proxy_code_files()
    name = file_digest("".join(f"{k}\0{v}\0" for k, v in sorted(files.items())))[:16]
    return os.path.join(tools_dir, "egress-" + name), files


def ensure_proxy_code(path: str, files: Mapping[str, str]) -> None:
    """Write the proxy's code below ``path`` once (read-only files, written aside then renamed)."""
    if os.path.isdir(path):
        return
    temporary = f"{path}.tmp.{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    for relative, source in files.items():
        target = os.path.join(temporary, relative)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(source)
        os.chmod(target, 0o644)
    for root, _dirs, _files in os.walk(temporary):
        os.chmod(root, 0o755)
    try:
        os.rename(temporary, path)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not os.path.isdir(path):
            raise


def image_info(client: Any, ref: str, what: str) -> dict[str, Any]:
    """An image's id, entrypoint, cmd and env; a clear error when it is not on this host."""
    try:
        info = client.inspect_image(ref)
    except Exception as exc:
        if _not_found(exc):
            raise EngineError(
                f"{what} image {ref!r} is not on this host; build or load it "
                "(bot-bottle never pulls from a registry)"
            ) from None
        raise
    config = info.get("Config") or {}
    return {
        "id": str(info["Id"]),
        "entrypoint": list(config.get("Entrypoint") or []),
        "cmd": list(config.get("Cmd") or []),
    }


def host_addresses(
    fib_trie: str = "/proc/net/fib_trie", if_inet6: str = "/proc/net/if_inet6"
) -> list[str]:
    """This host's own IPv4 and IPv6 addresses, read from /proc (no process spawned)."""
    found: list[str] = []
    try:
        with open(fib_trie, encoding="ascii") as handle:
            previous = ""
            for line in handle:
                text = line.strip()
                if text.startswith("/32 host LOCAL") and previous:
                    found.append(previous)
                if text.startswith("|-- "):
                    previous = text[4:]
    except OSError:
        pass
    try:
        with open(if_inet6, encoding="ascii") as handle:
            for line in handle:
                raw = line.split()[0] if line.split() else ""
                if len(raw) == 32:
                    found.append(":".join(raw[i : i + 4] for i in range(0, 32, 4)))
    except OSError:
        pass
    return sorted({str(ipaddress.ip_address(a)) for a in found})


def ensure_guard(client: Any, image: str, image_id: str, tools_dir: str) -> str:
    """The static busybox of the agent's seal guard, copied once out of the netutils image."""
    path = os.path.join(tools_dir, "busybox-" + image_id.rsplit(":", maxsplit=1)[-1][:12])
    if os.path.isfile(path):
        return path
    os.makedirs(tools_dir, mode=0o755, exist_ok=True)
    created = client.create_container(image, command=["true"], network_disabled=True)
    try:
        stream, _ = client.get_archive(created["Id"], "/bin/busybox")
        data = io.BytesIO(b"".join(stream))
    except Exception as exc:
        raise EngineError(
            f"the netutils image {image} has no /bin/busybox ({exc}); rebuild it with "
            "busybox-static in docker_bottle_image_packages"
        ) from None
    finally:
        client.remove_container(created["Id"], force=True)
    with tarfile.open(fileobj=data) as archive:
        member = archive.extractfile("busybox")
        if member is None:
            raise EngineError(f"/bin/busybox in {image} is not a file")
        content = member.read()
    temporary = path + ".tmp"
    with open(temporary, "wb") as handle:
        handle.write(content)
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)
    return path


class Engine:
    """Carries out a plan's actions, in order, for one bottle."""

    def __init__(
        self,
        client: Any,
        want: Want,
        *,
        directory: str,
        netutils_image: str,
        egress_network: str,
        guard: str,
        proxy_image: str = "",
        resolver_wait: float = 30.0,
        proxy_wait: float = 30.0,
        rules_wait: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.want = want
        self.names = want.names
        self.directory = directory
        self.netutils_image = netutils_image
        self.egress_network = egress_network
        self.guard = guard
        self.proxy_image = proxy_image
        self.resolver_wait = resolver_wait
        self.proxy_wait = proxy_wait
        self.rules_wait = rules_wait
        self.sleep = sleep
        self.done: list[str] = []

    # ------------------------------------------------------------------ helpers

    def _labels(self, component: str, spec: str = "") -> dict[str, str]:
        labels = {
            MANAGED_LABEL: MANAGED_VALUE,
            BOTTLE_LABEL: self.names.bottle,
            COMPONENT_LABEL: component,
        }
        if spec:
            labels[SPEC_LABEL] = spec
        return labels

    def _remove(self, name: str) -> None:
        try:
            self.client.remove_container(name, force=True)
        except Exception as exc:
            if not _not_found(exc):
                raise

    def _logs(self, name: str) -> str:
        try:
            raw = self.client.logs(name, stdout=True, stderr=True, tail=5)
        except Exception:
            return ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return " ".join(text.split())[-400:]

    def _running(self, name: str) -> bool:
        info = _inspect(self.client, name)
        return bool(info and (info.get("State") or {}).get("Running"))

    # ------------------------------------------------------------------ actions

    def run(self, actions: Sequence[str]) -> None:
        """Every action in order; on any failure the agent is stopped, then the error raised."""
        for action in actions:
            try:
                getattr(self, "_" + action)()
            except Exception as exc:
                stopped = self._fail_closed()
                raise EngineError(
                    f"bottle {self.names.bottle}: {action.replace('_', ' ')} failed: {exc}; "
                    f"{stopped}"
                ) from None
            self.done.append(action)

    def _fail_closed(self) -> str:
        try:
            if self._running(self.names.agent):
                self.client.stop(self.names.agent, timeout=1)
                return "its agent was stopped (fail closed)"
            return "its agent is not running"
        except Exception as exc:
            return f"stopping its agent failed too ({exc}): stop {self.names.agent} by hand"

    def _write_files(self) -> None:
        os.makedirs(os.path.join(self.directory, LOG_DIR), mode=0o755, exist_ok=True)
        os.chmod(self.directory, 0o755)
        # the proxy (its own user) writes its decisions here; the audit reads them
        egress_log = os.path.join(self.directory, EGRESS_LOG_DIR)
        os.makedirs(egress_log, mode=0o755, exist_ok=True)
        os.chown(egress_log, PROXY_UID, PROXY_UID)
        for name, content in self.want.files.items():
            path = os.path.join(self.directory, name)
            temporary = path + ".tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)

    def _remove_files(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _create_network(self) -> None:
        ipam = IPAMConfig(
            pool_configs=[IPAMPool(subnet=self.want.subnet, gateway=self.want.addresses["gateway"])]
        )
        self.client.create_network(
            self.names.network,
            driver="bridge",
            internal=True,
            ipam=ipam,
            enable_ipv6=False,
            labels=self._labels("network"),
            check_duplicate=True,
        )

    def _remove_network(self) -> None:
        try:
            self.client.remove_network(self.names.network)
        except Exception as exc:
            if not _not_found(exc):
                raise

    def _endpoint(self, address: str) -> Any:
        return self.client.create_networking_config(
            {self.names.network: self.client.create_endpoint_config(ipv4_address=address)}
        )

    def _start_service(
        self,
        image: str,
        name: str,
        address: str,
        *,
        dns: str,
        labels: dict[str, str],
        host: dict[str, Any],
        **create: Any,
    ) -> None:
        """Create and start a service of the bottle network (the resolver, the proxy):
        ``name`` at ``address``, with a leg on the egress network when there is one,
        ``dns`` its resolver, confined (no capability but ``host``'s ``cap_add``, no new
        privileges), restarted unless stopped. ``host``: more host configuration;
        ``create``: more container options (its command, user)."""
        host_config = self.client.create_host_config(
            network_mode=self.names.network,
            dns=[dns],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            restart_policy={"Name": "unless-stopped"},
            **host,
        )
        created = self.client.create_container(
            image,
            name=name,
            labels=labels,
            host_config=host_config,
            networking_config=self._endpoint(address),
            stop_timeout=2,
            use_config_proxy=False,
            **create,
        )
        if self.egress_network:
            self.client.connect_container_to_network(created["Id"], self.egress_network)
        self.client.start(created["Id"])

    def _create_resolver(self) -> None:
        self._start_service(
            self.netutils_image,
            self.names.resolver,
            self.want.addresses["resolver"],
            dns="127.0.0.1",
            labels=self._labels("resolver", self.want.resolver_spec),
            host={
                "cap_add": _RESOLVER_CAPS,
                "mounts": [
                    Mount("/etc/bottle", self.directory, type="bind", read_only=True),
                    Mount("/var/log/bottle", os.path.join(self.directory, LOG_DIR), type="bind"),
                ],
            },
            command=list(RESOLVER_ARGV),
        )

    def _remove_resolver(self) -> None:
        self._remove(self.names.resolver)

    def _restart_resolver(self) -> None:
        self.client.restart(self.names.resolver, timeout=2)

    def _start_resolver(self) -> None:
        self.client.start(self.names.resolver)

    def _wait_resolver(self) -> None:
        """Until the resolver answers NXDOMAIN for an unlisted name (polled, no fixed wait)."""
        deadline = time.monotonic() + self.resolver_wait
        argv = ["dig", "+time=1", "+tries=1", "@127.0.0.1", HEALTH_NAME]
        last = ""
        while True:
            if not self._running(self.names.resolver):
                raise EngineError(f"the resolver exited: {self._logs(self.names.resolver)}")
            code, last = exec_in(self.client, self.names.resolver, argv)
            if code == 0 and "status: NXDOMAIN" in last:
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    f"the resolver did not answer within {self.resolver_wait:g} s: "
                    f"{' '.join(last.split())[-200:]}"
                )
            self.sleep(0.05)

    def _create_holder(self) -> None:
        host_config = self.client.create_host_config(
            network_mode=self.names.network,
            dns=[self.want.addresses["resolver"]],
            cap_drop=["ALL"],
            cap_add=_HOLDER_CAPS,
            security_opt=["no-new-privileges:true"],
            mounts=[
                Mount(RULES_DIR, self.directory, type="bind", read_only=True),
                Mount(
                    "/etc/resolv.conf",
                    os.path.join(self.directory, "resolv.conf"),
                    type="bind",
                    read_only=True,
                ),
            ],
            restart_policy={"Name": "no"},
        )
        created = self.client.create_container(
            self.netutils_image,
            command=["sh", "-ec", HOLDER_SCRIPT],
            name=self.names.holder,
            labels=self._labels("holder", self.want.holder_spec),
            host_config=host_config,
            networking_config=self._endpoint(self.want.addresses["holder"]),
            stop_signal="SIGKILL",
            use_config_proxy=False,
        )
        self.client.start(created["Id"])

    def _remove_holder(self) -> None:
        self._remove(self.names.holder)

    def _start_holder(self) -> None:
        self.client.start(self.names.holder)

    def _load_rules(self) -> None:
        code, output = exec_in(self.client, self.names.holder, RELOAD_ARGV)
        if code != 0:
            raise EngineError(f"the rules did not load: {' '.join(output.split())[-300:]}")

    def _check_rules(self) -> None:
        """Read the rules back until both families carry the stamp and the seal is set."""
        deadline = time.monotonic() + self.rules_wait
        while True:
            if not self._running(self.names.holder):
                raise EngineError(
                    f"the namespace holder exited before sealing: {self._logs(self.names.holder)}"
                )
            code, text = exec_in(self.client, self.names.holder, READ_ARGV)
            stamp, sealed = parse_rules_dump(text, self.want.stamp) if code == 0 else ("", False)
            if stamp == self.want.stamp and sealed:
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    f"the rules read back are not the policy's ({stamp or 'none'} loaded, "
                    f"sealed: {sealed}; wanted {self.want.stamp})"
                )
            self.sleep(0.05)

    def _make_ca(self) -> None:
        ensure_ca(
            ca_dir(self.directory),
            f"bot-bottle {self.names.bottle} CA",
            owner=(PROXY_UID, PROXY_UID),
        )

    def _ca(self) -> str:
        fingerprint = _ca_fingerprint(self.directory)
        if not fingerprint:
            raise EngineError(f"the bottle's CA in {ca_dir(self.directory)} is missing or broken")
        return fingerprint

    def _create_proxy(self) -> None:
        spec = self.want.proxy_create
        code_dir = str(spec["code"])
        _, files = proxy_code_dir(os.path.dirname(code_dir))
        ensure_proxy_code(code_dir, files)
        mounts = [
            Mount(CONTAINER_CODE_ROOT, code_dir, type="bind", read_only=True),
            Mount(
                CONTAINER_CONFIG,
                os.path.join(self.directory, "egress.json"),
                type="bind",
                read_only=True,
            ),
            Mount(CONTAINER_CONFDIR, ca_dir(self.directory), type="bind", read_only=True),
            Mount(CONTAINER_LOG_DIR, os.path.join(self.directory, EGRESS_LOG_DIR), type="bind"),
        ]
        if spec.get("trusted_ca"):
            mounts.append(
                Mount(CONTAINER_TRUSTED_CA, str(spec["trusted_ca"]), type="bind", read_only=True)
            )
        self._start_service(
            self.proxy_image,
            self.names.proxy,
            self.want.addresses["proxy"],
            dns=self.want.addresses["resolver"],
            labels={**self._labels("proxy", self.want.proxy_spec), CA_LABEL: self._ca()},
            host={
                "read_only": True,
                "tmpfs": {
                    "/tmp": "rw,nosuid,nodev,size=64m",
                    CONTAINER_SECRETS_DIR: (
                        f"rw,nosuid,nodev,noexec,size=1m,mode=0700,uid={PROXY_UID},gid={PROXY_UID}"
                    ),
                },
                "mounts": mounts,
            },
            command=list(spec["command"]),
            user=f"{PROXY_UID}:{PROXY_UID}",
        )

    def _remove_proxy(self) -> None:
        self._remove(self.names.proxy)

    def _start_proxy(self) -> None:
        self.client.start(self.names.proxy)

    def _deliver_secrets(self) -> None:
        """Hand the runtime secrets to the running proxy: written by its own user into its
        tmpfs from the standard input of one exec (the engine refuses archives into a
        read-only container, and a command line would show them). Nothing is written on
        the host."""
        path = f"{CONTAINER_SECRETS_DIR}/{SECRETS_FILE_NAME}"
        argv = ["sh", "-ec", 'umask 077; cat > "$0.new"; mv -f "$0.new" "$0"', path]
        created = self.client.exec_create(self.names.proxy, argv, stdin=True, stdout=True)
        sock = self.client.exec_start(created["Id"], socket=True)
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(self.want.proxy_secrets)
            raw.shutdown(socket.SHUT_WR)
            while raw.recv(4096):
                pass
        finally:
            sock.close()
        code = self.client.exec_inspect(created["Id"]).get("ExitCode")
        if code != 0:
            raise EngineError(f"the proxy did not take its runtime secrets (exit {code})")

    def _wait_proxy(self) -> None:
        """Until the proxy accepts connections on the bottle network (polled, no fixed wait)."""
        deadline = time.monotonic() + self.proxy_wait
        address = (self.want.addresses["proxy"], PROXY_PORT)
        while True:
            if not self._running(self.names.proxy):
                raise EngineError(f"the egress proxy exited: {self._logs(self.names.proxy)}")
            try:
                socket.create_connection(address, timeout=1).close()
                return
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise EngineError(
                    f"the egress proxy did not listen within {self.proxy_wait:g} s ({last}): "
                    f"{self._logs(self.names.proxy)}"
                )
            self.sleep(0.05)

    def _create_agent(self) -> None:
        spec = self.want.agent_create
        mounts = [
            Mount(
                "/etc/resolv.conf",
                os.path.join(self.directory, "resolv.conf"),
                type="bind",
                read_only=True,
            ),
            Mount(GUARD_BINARY, self.guard, type="bind", read_only=True),
            *(
                Mount(target, source, type="bind", read_only=True)
                for source, target in agent_ca_mounts(self.directory)
            ),
        ]
        for mount in spec.get("mounts") or []:
            mounts.append(
                Mount(
                    str(mount["target"]),
                    str(mount["source"]),
                    type="bind",
                    read_only=bool(mount.get("read_only")),
                )
            )
        cpus = spec.get("cpus")
        memory = spec.get("memory_mib")
        host_config = self.client.create_host_config(
            network_mode=f"container:{self.names.holder}",
            cap_drop=["ALL"],
            cap_add=list(spec.get("capabilities") or []) or None,
            security_opt=["no-new-privileges:true"],
            init=True,
            mounts=mounts,
            nano_cpus=int(cpus * 1_000_000_000) if cpus else None,
            mem_limit=f"{memory}m" if memory else None,
            restart_policy={"Name": "no"},
        )
        env = dict(self.want.agent_env)
        labels = {
            **{str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
            **self._labels("agent", self.want.agent_spec),
            POLICY_LABEL: self.want.policy_hash,
            ENV_LABEL: ",".join(sorted(env)),
            CA_LABEL: self._ca(),
        }
        self.client.create_container(
            spec["image"],
            entrypoint=list(spec["entrypoint"]),
            command=list(spec["cmd"]),
            name=self.names.agent,
            user=spec.get("user") or None,
            working_dir=spec.get("workdir") or None,
            environment=env,
            labels=labels,
            host_config=host_config,
            stop_timeout=2,
            use_config_proxy=False,
        )

    def _remove_agent(self) -> None:
        self._remove(self.names.agent)

    def _start_agent(self) -> None:
        self.client.start(self.names.agent)

    def _stop_agent(self) -> None:
        self.client.stop(self.names.agent, timeout=2)

    def _restart_agent(self) -> None:
        self.client.restart(self.names.agent, timeout=2)

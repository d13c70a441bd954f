# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a bottle's runtime may hold: capabilities and host mounts.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package.

The one owner of these rules. The manifest validator (on the controller), the
backend modules (on the managed host, where mount sources are resolved through
their symlinks) and ``bottle verify`` (which reads the agent's capability sets
from inside the bottle) all ask this file; none keeps a list of its own.

* Capabilities are an **allowlist**: spelling is normalised first (any case, with
  or without ``CAP_``), then anything that could undo the sandbox is refused.
* Mounts refuse container-runtime sockets (any Unix socket, judged on the host),
  ``/``, the host's system trees, the container runtimes' and bot-bottle's own
  state, and any folder that holds one of those.

Standard library only: shipped to managed hosts.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence

# --------------------------------------------------------------------------- capabilities

#: Capabilities an agent may be given. Docker's defaults minus the ones that reach
#: past the container: NET_RAW (forge packets on the bottle network, e.g. ARP-spoof the
#: resolver), MKNOD (device nodes), SETFCAP and SETPCAP (grant capabilities).
ALLOWED_CAPABILITIES: frozenset[str] = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "NET_BIND_SERVICE",
        "SETGID",
        "SETUID",
        "SYS_CHROOT",
    }
)

#: Linux capability numbers (linux/capability.h), for reading /proc/PID/status masks.
CAPABILITY_BITS: dict[str, int] = {
    name: bit
    for bit, name in enumerate(
        (
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        )
    )
}

_WHY: dict[str, str] = {
    "ALL": "it grants every capability, NET_ADMIN included",
    "NET_ADMIN": "it lets the agent rewrite its own firewall and reach Docker's resolver again",
    "NET_RAW": "it lets the agent forge packets on the bottle network (spoof the resolver)",
    "SYS_ADMIN": "it lets the agent mount file systems and enter namespaces",
    "SYS_MODULE": "it lets the agent load kernel modules",
    "SYS_PTRACE": "it lets the agent trace and inject into other processes",
    "SYS_RAWIO": "it gives raw access to devices and I/O ports",
    "DAC_READ_SEARCH": "it lets the agent open host files by handle (the 'shocker' escape)",
    "BPF": "it lets the agent load BPF programs into the kernel",
    "PERFMON": "it exposes kernel performance and tracing data",
    "MKNOD": "it lets the agent create device nodes",
    "SETFCAP": "it lets the agent grant capabilities to files",
    "SETPCAP": "it lets the agent change capability sets",
    "SYS_BOOT": "it lets the agent reboot the host",
    "SYS_TIME": "it lets the agent set the host's clock",
    "MAC_ADMIN": "it lets the agent change the host's mandatory access control",
    "MAC_OVERRIDE": "it bypasses the host's mandatory access control",
}
_CAP_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


class RuntimeSettingError(ValueError):
    """A runtime setting a bottle may not have; the message says why and what to do."""


def normalize_capability(raw: object) -> str:
    """``cap_net_admin``, ``CAP_NET_ADMIN`` and ``net_admin`` are all ``NET_ADMIN``.

    Raises :class:`RuntimeSettingError` for something that is not a capability name.
    """
    if not isinstance(raw, str):
        raise RuntimeSettingError(f"expected a capability name, got {type(raw).__name__}")
    name = raw.upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if not _CAP_NAME.match(name):
        raise RuntimeSettingError(f"{raw!r} is not a capability name (for example CHOWN)")
    return name


def capability_refusal(raw: object) -> str | None:
    """Why the capability ``raw`` is refused, or None when it is allowed."""
    try:
        name = normalize_capability(raw)
    except RuntimeSettingError as exc:
        return str(exc)
    if name in ALLOWED_CAPABILITIES:
        return None
    if name not in CAPABILITY_BITS and name != "ALL":
        return f"{raw!r} is not a Linux capability"
    why = _WHY.get(name, "it is not one of the capabilities that cannot undo the sandbox")
    return f"capability {name} is refused: {why}"


#: What to do about a refused capability.
CAPABILITY_FIX = "the agent may hold only " + ", ".join(sorted(ALLOWED_CAPABILITIES))


def check_capabilities(raw: Iterable[object]) -> list[str]:
    """The normalised, sorted, de-duplicated capabilities, or :class:`RuntimeSettingError`."""
    names: set[str] = set()
    for item in raw:
        refusal = capability_refusal(item)
        if refusal is not None:
            raise RuntimeSettingError(f"{refusal} (fix: {CAPABILITY_FIX})")
        names.add(normalize_capability(item))
    return sorted(names)


def capabilities_in_mask(mask: str) -> list[str]:
    """Capability names set in a ``/proc/PID/status`` hex mask (``CapBnd`` etc.)."""
    value = int(mask, 16)
    names = [name for name, bit in CAPABILITY_BITS.items() if value >> bit & 1]
    unknown = value >> len(CAPABILITY_BITS)
    if unknown:
        names.append(f"bits {unknown << len(CAPABILITY_BITS):#x}")
    return names


def forbidden_in_mask(mask: str) -> list[str]:
    """The capabilities of a mask that are outside :data:`ALLOWED_CAPABILITIES`."""
    return [name for name in capabilities_in_mask(mask) if name not in ALLOWED_CAPABILITIES]


# --------------------------------------------------------------------------- mounts

#: Trees no bottle may see, nor any folder that holds one of them.
REFUSED_TREES: tuple[str, ...] = (
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/etc",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/var/lib/bot-bottle",
    "/var/lib/libvirt",
    "/var/lib/kubelet",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
)

#: File names that are container-runtime control sockets wherever they live.
_SOCKET_NAMES = re.compile(
    r"(docker|containerd|podman|crio|cri-dockerd|buildkitd|smolvm|libvirt-sock)[^/]*\.sock\Z"
)

#: Folder names of runtime state wherever they live (per-user installs included).
_STATE_PARTS = ("/.local/share/smolvm", "/.local/share/containers", "/.docker")

#: What to mount instead of a refused source.
MOUNT_FIX = (
    "mount only the project folder the agent works on (for example /srv/work/my-repo); "
    "the agent reaches services through its egress routes, never through host sockets"
)


def _is_within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _path_refusal(path: str, shown: str, is_socket: bool, trees: Sequence[str]) -> str | None:
    """Why one (normalised) path may not be mounted, or None."""
    if path in ("/", "//"):
        return f"{shown} is the host's root file system, which hands the agent the host"
    if is_socket or _SOCKET_NAMES.search(path):
        return f"{shown} is a Unix socket: a container runtime's socket hands the agent the host"
    reason = None
    if any(part in path + "/" for part in _STATE_PARTS):
        reason = f"{shown} is container-runtime state"
    for tree in trees:
        if reason is None and _is_within(path, tree):
            reason = f"{shown} is inside {tree}, a host system or runtime tree"
        elif reason is None and _is_within(tree, path):
            reason = f"{shown} holds {tree}, a host system or runtime tree"
    return reason


def mount_refusal(
    source: str,
    real: str | None = None,
    is_socket: bool = False,
    extra_trees: Sequence[str] = (),
) -> str | None:
    """Why mounting host path ``source`` into a bottle is refused, or None.

    ``real`` is ``source`` with its symlinks resolved on the host that mounts it
    (the backend modules pass it; the controller cannot), and ``is_socket`` what
    the host found there. ``extra_trees`` are state folders the caller knows of
    (the Docker backend's state directory, smolvm's data directory). The reason
    does not say what to do instead: :data:`MOUNT_FIX` does.
    """
    if not isinstance(source, str) or not source.startswith("/"):
        return f"mount source {source!r} is not an absolute path"
    if "\x00" in source or "\n" in source:
        return f"mount source {source!r} holds a control character"
    seen = [posixpath.normpath(source)]
    if real is not None and posixpath.normpath(real) != seen[0]:
        seen.append(posixpath.normpath(real))
    trees = (*REFUSED_TREES, *(posixpath.normpath(t) for t in extra_trees if t))
    for path in seen:
        via = "" if path == seen[0] else f" (it resolves to {path})"
        reason = _path_refusal(path, f"mount source {source}{via}", is_socket, trees)
        if reason is not None:
            return reason
    return None


def host_mount_refusal(source: str, extra_trees: Sequence[str] = ()) -> str | None:
    """:func:`mount_refusal` for ``source`` as this host sees it: symlinks resolved,
    and a Unix socket recognised whatever its name."""
    if not isinstance(source, str) or not source.startswith("/"):
        return mount_refusal(source)
    try:
        is_socket = stat.S_ISSOCK(os.stat(source).st_mode)
    except OSError:
        is_socket = False
    return mount_refusal(source, os.path.realpath(source), is_socket, extra_trees)

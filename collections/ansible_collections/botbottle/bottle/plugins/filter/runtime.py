# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that check a bottle's runtime settings (rules: ``module_utils/_runtime.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    MOUNT_FIX,
    RuntimeSettingError,
    check_capabilities,
    mount_refusal,
)


def bottle_capabilities(capabilities: Sequence[Any] | None, bottle: str = "") -> list[str]:
    """The normalised capabilities (``cap_chown`` -> ``CHOWN``); fails on a refused one."""
    where = f"bottle {bottle}: " if bottle else ""
    try:
        return check_capabilities(capabilities or [])
    except RuntimeSettingError as exc:
        raise AnsibleFilterError(f"{where}runtime.capabilities: {exc}") from None


def bottle_mounts(
    mounts: Sequence[Mapping[str, Any]] | None,
    found: Sequence[str] | None = None,
    bottle: str = "",
    extra_trees: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Docker bind mounts for ``runtime.mounts``; fails on a refused source.

    ``found`` holds one line per mount as the host saw it: ``REAL<TAB>TYPE``
    (``realpath -e`` and ``stat -L -c %F``), so symlinks are judged by where they
    lead and sockets by what they are.
    """
    where = f"bottle {bottle}: " if bottle else ""
    result = []
    lines = list(found or [])
    for index, mount in enumerate(mounts or []):
        real, _, kind = (lines[index] if index < len(lines) else "").partition("\t")
        refusal = mount_refusal(
            str(mount.get("source", "")),
            real or None,
            is_socket=kind.strip() == "socket",
            extra_trees=extra_trees,
        )
        if refusal is not None:
            raise AnsibleFilterError(
                f"{where}runtime.mounts[{index}].source: {refusal} (fix: {MOUNT_FIX})"
            )
        result.append({**mount, "type": "bind", "source": real or mount.get("source")})
    return result


class FilterModule:
    """botbottle.bottle runtime filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"bottle_capabilities": bottle_capabilities, "bottle_mounts": bottle_mounts}

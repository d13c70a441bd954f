# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: the demo's stand-in for the internet (DEMO ONLY; the logic lives in
``module_utils/_demo_internet.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.module_utils._demo_internet import (
    demo_internet as _demo_internet,
)


def demo_internet(
    bottles: Sequence[Mapping[str, Any]], subnet: str, resolver: str, origin: str
) -> dict[str, Any]:
    """``{names, addresses, resolver_conf, cert_conf}`` for the bottles' host routes."""
    try:
        return _demo_internet(list(bottles or []), str(subnet), str(resolver), str(origin))
    except ValueError as exc:
        raise AnsibleFilterError(f"demo_internet: {exc}") from None


class FilterModule:
    """botbottle.bottle demo filter."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"demo_internet": demo_internet}

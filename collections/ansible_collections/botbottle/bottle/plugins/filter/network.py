# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: fixed addresses inside a Docker bottle network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    bottle_addresses as _bottle_addresses,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    choose_subnet as _choose_subnet,
)


def bottle_addresses(subnet: str, gateway: str | None = None) -> dict[str, Any]:
    """Resolver and holder addresses of a bottle network."""
    try:
        return _bottle_addresses(subnet, gateway)
    except ValueError as exc:
        raise AnsibleFilterError(f"bottle_addresses: {exc}") from None


def bottle_subnet(name: str, pool: str, prefix: int, used: list[str]) -> str:
    """A free subnet of the pool for a bottle network."""
    try:
        return _choose_subnet(name, pool, int(prefix), used)
    except ValueError as exc:
        raise AnsibleFilterError(f"bottle_subnet: {exc}") from None


class FilterModule:
    """botbottle.bottle network filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"bottle_addresses": bottle_addresses, "bottle_subnet": bottle_subnet}

#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module: read every bot-bottle bottle on a Docker host (the read-only twin of docker_bottle)."""

from __future__ import annotations

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    BOTTLE_LABEL,
    COMPONENT_LABEL,
    MANAGED_LABEL,
    MANAGED_VALUE,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    READ_ARGV,
    parse_rules_dump,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_engine import (
    EngineError,
    connect,
    exec_in,
)

DOCUMENTATION = r"""
module: docker_bottle_info
short_description: Read the bot-bottle bottles on a Docker host
version_added: 0.2.0
author: bot-bottle contributors
description:
  - Lists every bottle M(botbottle.bottle.docker_bottle) made on this host (containers labelled
    C(botbottle.managed-by=bot-bottle)), with the state of its agent, holder, resolver and
    proxy, and the rules actually loaded in its namespace (their policy stamp and the seal).
  - Never returns a container's environment, so no secret reaches a result or a run's artifacts.
  - When Docker does not answer, the module does not fail; it returns C(available=false) and
    the reason, so a caller can report the bottles as unknown rather than absent.
options:
  names:
    description: Only these bottles (by bottle name); all of them by default.
    type: list
    elements: str
extends_documentation_fragment:
  - botbottle.bottle.docker
attributes:
  check_mode:
    support: full
    details: Read-only; it runs the same in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: What runs here
  botbottle.bottle.docker_bottle_info:
  register: found
"""

RETURN = r"""
available:
  description: Whether Docker answered.
  type: bool
  returned: always
reason:
  description: Why Docker could not be asked.
  type: str
  returned: when available is false
bottles:
  description: One entry per bottle.
  type: list
  elements: dict
  returned: always
  contains:
    name: {description: Bottle name., type: str}
    state: {description: "The agent's status (running, exited, ...), or absent.", type: str}
    holder: {description: The namespace holder's status, or absent., type: str}
    resolver: {description: The resolver's status, or absent., type: str}
    proxy: {description: The egress proxy's status, or absent., type: str}
    rules: {description: The stamp of the rules loaded in the namespace, or empty., type: str}
    policy: {description: The policy hash those rules enforce, or empty., type: str}
    sealed: {description: Whether the namespace carries the seal the agent waits for., type: bool}
"""


def _bottles(client: Any, only: list[str] | None) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    listing = client.containers(all=True, filters={"label": [f"{MANAGED_LABEL}={MANAGED_VALUE}"]})
    for container in listing:
        labels = container.get("Labels") or {}
        name = str(labels.get(BOTTLE_LABEL, ""))
        component = str(labels.get(COMPONENT_LABEL, ""))
        if not name or (only and name not in only):
            continue
        entry = found.setdefault(
            name,
            {
                "name": name,
                "state": "absent",
                "holder": "absent",
                "resolver": "absent",
                "proxy": "absent",
                "rules": "",
                "policy": "",
                "sealed": False,
            },
        )
        status = str(container.get("State") or "unknown")
        if component == "agent":
            entry["state"] = status
        elif component in ("holder", "resolver", "proxy"):
            entry[component] = status
        if component == "holder" and status == "running":
            try:
                code, text = exec_in(client, str(container["Id"]), READ_ARGV)
            except Exception as exc:  # gone or stopped since the listing: read nothing
                if "No such container" not in str(exc) and "is not running" not in str(exc):
                    raise
                entry["holder"], code, text = "absent", 1, ""
            if code == 0:
                stamp, sealed = parse_rules_dump(text, "")
                entry["rules"], entry["sealed"] = stamp, sealed
                entry["policy"] = stamp.split()[1] if len(stamp.split()) > 1 else ""
    return [found[name] for name in sorted(found)]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str"},
            "docker_host": {"type": "str"},
        },
        supports_check_mode=True,
    )
    try:
        client = connect(module.params["docker_host"], timeout=20)
    except EngineError as exc:
        module.exit_json(changed=False, available=False, reason=str(exc), bottles=[])
    try:
        bottles = _bottles(client, module.params["names"])
    except Exception as exc:  # Docker went away mid-read, or an unexpected error
        module.fail_json(
            msg=f"cannot read the bottles on this host: {exc}", exception=traceback.format_exc()
        )
    module.exit_json(changed=False, available=True, bottles=bottles)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: read smolmachines microVMs (the read-only twin of smolmachine)."""

from __future__ import annotations

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._smolmachine import actual_spec
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    CLIENT_ARGUMENT_SPEC,
    SmolvmError,
    client_from_params,
)

DOCUMENTATION = r"""
module: smolmachine_info
short_description: List smolmachines microVMs with their normalised configuration and state
version_added: 0.1.0
author: bot-bottle contributors
description:
  - Reads local smolvm machines by name or by labels, without changing or booting anything.
  - Returns each machine's configuration normalised the same way M(botbottle.bottle.smolmachine)
    compares it (allow lists as stored, with C(=host) and C(*.zone) prefixes), with env values
    redacted.
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  name:
    description: Only the machine with this name.
    type: str
  labels:
    description: >-
      Only machines carrying all these labels (for example C(botbottle.managed-by=bot-bottle)).
    type: dict
extends_documentation_fragment:
  - botbottle.bottle.smolvm
seealso:
  - module: botbottle.bottle.smolmachine
"""

EXAMPLES = r"""
- name: Every machine bot-bottle manages on this host
  botbottle.bottle.smolmachine_info:
    labels:
      botbottle.managed-by: bot-bottle
  register: machines

- name: One machine
  botbottle.bottle.smolmachine_info:
    name: bottle-dev
  register: dev
"""

RETURN = r"""
machines:
  description: The machines found, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Machine name.
      type: str
    state:
      description: smolvm's state (C(created), C(stopped), C(running) ...).
      type: str
    config:
      description: Normalised configuration (env values redacted).
      type: dict
    labels:
      description: The machine's labels.
      type: dict
  sample:
    - name: bottle-dev
      state: created
      labels: {botbottle.managed-by: bot-bottle, botbottle.policy: "sha256:..."}
      config:
        allow_hosts: ["=api.example.com"]
        allow_cidrs: []
        network: true
"""


def run(module: AnsibleModule) -> None:
    params = module.params
    client = client_from_params(params)
    wanted_labels = {str(k): str(v) for k, v in (params["labels"] or {}).items()}
    machines: list[dict[str, Any]] = []
    for listing in sorted(client.list(), key=lambda m: str(m.get("name"))):
        name = str(listing.get("name"))
        if params["name"] is not None and name != params["name"]:
            continue
        labels = {str(k): str(v) for k, v in (listing.get("labels") or {}).items()}
        if any(labels.get(k) != v for k, v in wanted_labels.items()):
            continue
        spec = actual_spec(listing, client.record(name))
        machines.append(
            {
                "name": name,
                "state": str(listing.get("state")),
                "labels": labels,
                "config": spec.to_dict(),
            }
        )
    module.exit_json(changed=False, machines=machines)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str"},
            "labels": {"type": "dict"},
            **CLIENT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    try:
        run(module)
    except SmolvmError as exc:
        module.fail_json(msg=exc.describe(), code=exc.code)
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(
            msg=f"unexpected error reading machines: {exc}", exception=traceback.format_exc()
        )


if __name__ == "__main__":
    main()

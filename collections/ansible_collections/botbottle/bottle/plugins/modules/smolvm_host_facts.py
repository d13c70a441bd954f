#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: can this host boot smolmachines microVMs? (facts)"""

from __future__ import annotations

import glob
import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import probe

DOCUMENTATION = r"""
module: smolvm_host_facts
short_description: Find out whether a host can boot smolmachines microVMs
version_added: 0.1.0
author: bot-bottle contributors
description:
  - Runs C(smol.local_availability()) with the Python of the virtualenv that holds the pinned
    C(smolmachines), then a real boot probe - creates a throw-away machine with the bundled
    smolvm CLI, starts it, runs C(true) in it and deletes it.
  - Sets facts that plays use to refuse smolmachines bottles on hosts that cannot run them.
    There is no fallback to another backend.
  - The probe creates and deletes one temporary machine; it runs the same in check mode and
    never reports a change.
attributes:
  check_mode:
    support: full
    details: The probe runs in check mode too; it leaves nothing behind.
  diff_mode:
    support: none
  facts:
    support: full
options:
  venv:
    description: Virtualenv holding C(smolmachines) (installed by the C(smolmachines_host) role).
    type: path
    default: /opt/bot-bottle/smolmachines
  boot:
    description: Run the boot probe; without it only availability is checked, and
      C(bottle_host_can_boot_microvms) is false with a reason saying so.
    type: bool
    default: true
  timeout:
    description: Seconds the probe machine may take to boot.
    type: int
    default: 120
  data_home:
    description: smolvm's data directory parent (E(XDG_DATA_HOME)) for the probe machine.
    type: path
"""

EXAMPLES = r"""
- name: Probe the host
  botbottle.bottle.smolvm_host_facts:

- name: Refuse smolmachines bottles on hosts that cannot boot them
  ansible.builtin.assert:
    that: bottle_host_can_boot_microvms
    fail_msg: "{{ bottle_host_microvm_reason }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts about this host's microVM support.
  returned: always
  type: dict
  contains:
    bottle_host_can_boot_microvms:
      description: A probe microVM booted and ran a command.
      type: bool
    bottle_host_microvm_reason:
      description: Why not (the failing step and smolvm's words), or what worked.
      type: str
      sample: "KVM is present but a microVM did not boot: smolvm start: SMOLVM_ERROR: ..."
    bottle_host_microvm_availability:
      description: "C(smol.local_availability()): [ok, code, reason]."
      type: list
    bottle_host_smolvm_binary:
      description: The bundled smolvm CLI the bottle modules use.
      type: str
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "venv": {"type": "path", "default": "/opt/bot-bottle/smolmachines"},
            "boot": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 120},
            "data_home": {"type": "path"},
        },
        supports_check_mode=True,
    )
    venv = module.params["venv"]
    python = os.path.join(venv, "bin", "python")
    found = sorted(
        glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "smol", "smol-vmm"))
    )
    cli = found[-1] if found else ""
    try:
        if not cli:
            result = {
                "can_boot": False,
                "availability": [False, "RUNTIME_NOT_INSTALLED", ""],
                "reason": f"no smolmachines in {venv} (run the smolmachines_host role)",
            }
        elif not module.params["boot"]:
            result = {
                "can_boot": False,
                "availability": [None, None, None],
                "reason": "the boot probe was not run (boot=false)",
            }
        else:
            result = probe(
                cli, python, data_home=module.params["data_home"], timeout=module.params["timeout"]
            )
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(
            msg=f"the microVM boot probe failed unexpectedly: {exc}",
            exception=traceback.format_exc(),
        )
    module.exit_json(
        changed=False,
        ansible_facts={
            "bottle_host_can_boot_microvms": bool(result["can_boot"]),
            "bottle_host_microvm_reason": str(result["reason"]),
            "bottle_host_microvm_availability": result["availability"],
            "bottle_host_smolvm_binary": cli,
        },
    )


if __name__ == "__main__":
    main()

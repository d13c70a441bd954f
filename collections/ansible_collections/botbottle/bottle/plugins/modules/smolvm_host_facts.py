#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: can this host boot smolmachines microVMs? (facts)"""

from __future__ import annotations

import glob
import os
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import (
    DEFAULT_CACHE_PATH,
    host_key,
    probe,
    probe_with_cache,
)

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
  - A host that cannot boot takes up to O(timeout) seconds to find out, so the verdict is stored
    on the host (O(cache_path)) with a key of what decides it - the smolmachines version, the
    kernel release (C(uname -r)), C(/dev/kvm) (whether it exists, its device numbers, mode and
    owner), the probing user's uid and groups, and O(timeout). Later runs reuse the stored
    verdict while the key is unchanged; any change probes again, and so does O(refresh=true).
attributes:
  check_mode:
    support: full
    details: The probe runs in check mode too; it leaves nothing behind. A stored verdict is
      read but a new one is not stored.
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
  cache:
    description:
      - Reuse the stored verdict when its key matches this host's, and store a new verdict.
      - Verdicts that say nothing about booting (smolmachines cannot be imported, the probe
        machine could not be created) are never stored.
      - Storing is not reported as a change; not being able to store is a warning.
    type: bool
    default: true
  cache_path:
    description: The JSON file that holds the stored verdict (its folder is created).
    type: path
    default: /var/lib/bot-bottle/smolmachines/boot-probe.json
  refresh:
    description: Probe even when a matching verdict is stored, and store the new one (with
      O(cache=true)). Use it when something the key does not cover changed.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Probe the host (or reuse the verdict stored for this kernel, /dev/kvm and smolmachines)
  botbottle.bottle.smolvm_host_facts:

- name: Probe again whatever is stored
  botbottle.bottle.smolvm_host_facts:
    refresh: true

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
    bottle_host_microvm_probe_cached:
      description: The verdict is the stored one (no probe ran).
      type: bool
    bottle_host_microvm_probed_at:
      description: When the verdict was made (UTC); empty when no probe ran.
      type: str
      sample: "2026-01-31T12:00:00Z"
cache:
  description: What happened to the stored verdict.
  returned: always
  type: dict
  contains:
    path:
      description: O(cache_path).
      type: str
    hit:
      description: A stored verdict with this host's key was used.
      type: bool
    stored:
      description: The new verdict was stored.
      type: bool
    error:
      description: Why it could not be stored, or empty.
      type: str
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "venv": {"type": "path", "default": "/opt/bot-bottle/smolmachines"},
            "boot": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 120},
            "data_home": {"type": "path"},
            "cache": {"type": "bool", "default": True},
            "cache_path": {"type": "path", "default": DEFAULT_CACHE_PATH},
            "refresh": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    venv = params["venv"]
    python = os.path.join(venv, "bin", "python")
    found = sorted(
        glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "smol", "smol-vmm"))
    )
    cli = found[-1] if found else ""
    cache: dict[str, Any] = {
        "path": params["cache_path"],
        "hit": False,
        "stored": False,
        "error": "",
    }
    try:
        if not cli:
            result: dict[str, Any] = {
                "can_boot": False,
                "availability": [False, "RUNTIME_NOT_INSTALLED", ""],
                "reason": f"no smolmachines in {venv} (run the smolmachines_host role)",
            }
        elif not params["boot"]:
            result = {
                "can_boot": False,
                "availability": [None, None, None],
                "reason": "the boot probe was not run (boot=false)",
            }
        else:
            timeout = params["timeout"]
            result, cache = probe_with_cache(
                lambda: probe(cli, python, data_home=params["data_home"], timeout=timeout),
                host_key(venv, timeout),
                path=params["cache_path"],
                use=params["cache"],
                refresh=params["refresh"],
                store=not module.check_mode,
            )
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(
            msg=f"the microVM boot probe failed unexpectedly: {exc}",
            exception=traceback.format_exc(),
        )
    if cache["error"]:
        module.warn(cache["error"])
    module.exit_json(
        changed=False,
        cache=cache,
        ansible_facts={
            "bottle_host_can_boot_microvms": bool(result["can_boot"]),
            "bottle_host_microvm_reason": str(result["reason"]),
            "bottle_host_microvm_availability": result["availability"],
            "bottle_host_smolvm_binary": cli,
            "bottle_host_microvm_probe_cached": bool(result.get("cached", False)),
            "bottle_host_microvm_probed_at": str(result.get("probed_at", "")),
        },
    )


if __name__ == "__main__":
    main()

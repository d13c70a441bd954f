# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup plugin: load, merge, validate and compile bottle manifests on the controller."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import STATES

try:  # jsonschema and PyYAML, on the controller (see the collection's requirements.txt)
    from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import (
        AUTO,
        BACKENDS,
        backend_problems,
    )
    from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import (
        bottle_record,
        resolve_all,
    )

    _IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:
    _IMPORT_ERROR = _exc


DOCUMENTATION = r"""
name: bottle_manifest
author: bot-bottle contributors
version_added: 0.1.0
short_description: Load and validate bot-bottle manifests on the controller
description:
  - Loads each bottle manifest (C(<name>.yml), C(<name>.yaml), or C(<name>.md) with YAML
    front matter), resolves C(extends), merges it, validates it against
    C(schemas/bottle.schema.json), and compiles its egress policy.
  - Folders are expanded to the manifests they hold (not recursively).
  - Any invalid manifest fails the lookup with one line per problem, naming the file, the
    line, the JSON path and the fix; nothing is returned then, so no play acts on half a
    fleet's manifests.
  - Runs on the controller and needs the Python packages C(jsonschema) and C(PyYAML) there
    (the collection's C(requirements.txt)); not the C(bot-bottle) CLI.
options:
  _terms:
    description:
      - Manifest files or folders, or inventory entries C({manifest, state}) whose C(state) is
        one of C(started) (default), C(present), C(stopped), C(absent).
    type: list
    elements: raw
    required: true
  basedir:
    description: Folder relative paths are resolved against; the playbook's folder by default.
    type: path
  backend:
    description:
      - The backend the bottles run on (C(smolmachines), C(docker), or C(auto), which may use
        either). A bottle that sets a manifest key this backend does not enforce (a route's
        C(matches), C(auth) or C(dlp), C(egress.log) 1 or 2, C(git-gate), C(agent_provider),
        or a C(runtime) key the backend does not apply) fails the lookup, naming the file, the
        route and the key. Bottles whose declared state is C(absent) are not checked.
      - Empty (the default) checks the schema only.
    type: str
    default: ""
requirements:
  - The Python packages C(jsonschema) (4.18 or later) and C(PyYAML) on the controller (the
    collection's C(requirements.txt)).
notes:
  - Secrets are never returned; C(${HOST_VAR}) and C(?prompt) entries stay unresolved.
"""

EXAMPLES = r"""
- name: Load the example bottles
  ansible.builtin.set_fact:
    bottles: "{{ query('botbottle.bottle.bottle_manifest', 'examples/bottles') }}"

- name: Load them for the Docker backend (refuse keys it does not enforce)
  ansible.builtin.set_fact:
    bottles: "{{ query('botbottle.bottle.bottle_manifest', 'examples/bottles', backend='docker') }}"

- name: Show each bottle's policy hash
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.policy.hash }}"
  loop: "{{ bottles }}"
"""

RETURN = r"""
_list:
  description: One entry per bottle.
  type: list
  elements: dict
  contains:
    name:
      description: Bottle name (the file name without extension).
      type: str
    object:
      description: >-
        What the bottle's machine (smolmachines) or agent container and network (Docker) are
        called on its host, C(bottle-<name>).
      type: str
    file:
      description: The manifest's path.
      type: str
    chain:
      description: Files merged into the bottle, ancestors first, the bottle's own file last.
      type: list
      elements: str
    manifest:
      description: >-
        The merged manifest. Its C(env) holds entries as written (literals, C(${HOST_VAR})
        references, C(?prompt) markers), never a resolved secret; resolve them with
        P(botbottle.bottle.bottle_env#lookup) in a C(no_log) task.
      type: dict
    env:
      description: >-
        Each env entry's kind (C(literal), C(host) with its C(variable), C(prompt)),
        never its value.
      type: dict
    policy:
      description: >-
        The compiled egress policy (exact_hosts, wildcard_zones, cidrs, log, hash, format).
      type: dict
    state:
      description: The declared state (from a C({manifest, state}) entry; C(started) otherwise).
      type: str
    warnings:
      description: What the policy leaves open (wildcard routes).
      type: list
      elements: str
"""


def _load(
    paths: list[str], states: dict[str, str] | None = None, backend: str = ""
) -> list[dict[str, Any]]:
    if _IMPORT_ERROR is not None:
        raise AnsibleLookupError(
            "botbottle.bottle.bottle_manifest needs the Python packages jsonschema and PyYAML "
            f"on the controller ({_IMPORT_ERROR}); install them into the Python that runs "
            "ansible-playbook (fix: pip install -r requirements.txt from the botbottle.bottle "
            "collection's folder)"
        )
    skipped: list[Any] = []
    bottles, problems = resolve_all(paths, warnings=skipped)
    for warning in skipped:
        Display().warning(f"bottle_manifest: {warning.format()}")
    if backend:
        if backend not in (*BACKENDS, AUTO):
            raise AnsibleLookupError(
                f"backend {backend!r} is not one of {', '.join((*BACKENDS, AUTO))} (fix: set "
                "bottle_backend to smolmachines, the default, docker or auto)"
            )
        context = "bottle_backend auto may run it on either backend" if backend == AUTO else ""
        for bottle in bottles:
            if (states or {}).get(os.path.realpath(str(bottle.file)), "started") == "absent":
                continue  # removing a bottle needs nothing enforced
            problems += [p for p in backend_problems(bottle, backend, context) if p not in problems]
    if problems:
        raise AnsibleLookupError(
            "invalid bottle manifests:\n" + "\n".join(p.format() for p in problems)
        )
    return [
        bottle_record(bottle, (states or {}).get(os.path.realpath(str(bottle.file)), "started"))
        for bottle in bottles
    ]


class LookupModule(LookupBase):
    """Load bottle manifests."""

    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        basedir = self.get_option("basedir") or self._loader.get_basedir()
        paths: list[str] = []
        states: dict[str, str] = {}
        for term in terms:
            for entry in term if isinstance(term, list) else [term]:
                state, item = "started", entry
                if isinstance(item, dict):
                    if "manifest" not in item:
                        raise AnsibleLookupError(
                            f"a bottle entry needs 'manifest' (got keys {sorted(item)}); "
                            "write {manifest: PATH, state: started|present|stopped|absent}"
                        )
                    state = str(item.get("state", "started"))
                    if state not in STATES:
                        raise AnsibleLookupError(
                            f"bottle {item['manifest']}: state {state!r} is not one of "
                            f"{', '.join(STATES)}"
                        )
                    item = item["manifest"]
                path = os.path.join(basedir, str(item))
                paths.append(path)
                states[os.path.realpath(path)] = state
        return _load(paths, states, str(self.get_option("backend") or ""))

# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup plugin: resolve a bottle's env entries on the controller."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import (
    EnvError,
    resolve_env,
    secret_values,
)

DOCUMENTATION = r"""
name: bottle_env
author: bot-bottle contributors
version_added: 0.1.0
short_description: Resolve a bot-bottle manifest's env entries on the controller
description:
  - Turns a bottle's C(env) mapping into the agent's environment. A literal stays as written;
    C(${HOST_VAR}) is copied from the controller's environment; C(?) or C(?prompt) is a secret
    taken from O(secrets).
  - A host variable that is not set, or a secret without an answer, fails the lookup with a
    message naming the variable, never with an empty value. No value appears in the message.
  - Use the result only in tasks with C(no_log).
options:
  _terms:
    description: >-
      The bottle's C(env) mapping (as returned by P(botbottle.bottle.bottle_manifest#lookup)).
    type: dict
    required: true
  secrets:
    description: Answers for C(?prompt) entries, by variable name.
    type: dict
    default: {}
  bottle:
    description: Bottle name, for error messages.
    type: str
    default: ""
  known_secrets:
    description: >-
      Return the bottle's secret values instead of its environment: a sorted list of the
      values of its C(${HOST_VAR}) and C(?prompt) entries (literals are not secrets), for
      the O(botbottle.bottle.docker_bottle#module:known_secrets) option (the egress proxy's
      data-loss prevention looks for them). Secret: use it only in tasks with C(no_log).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Start an agent with its environment
  community.docker.docker_container:
    name: bottle-dev
    image: bot-bottle/agent:bookworm
    env: >-
      {{ lookup('botbottle.bottle.bottle_env', bottle.manifest.env | default({}),
                secrets=my_secrets) }}
  no_log: true
"""

RETURN = r"""
_raw:
  description: >-
    The environment, variable name to value; with O(known_secrets), the list of secret
    values.
  type: list
  elements: raw
"""


class LookupModule(LookupBase):
    """Resolve env entries."""

    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        results = []
        for term in terms:
            if not isinstance(term, dict):
                raise AnsibleLookupError(
                    "bottle_env expects the bottle's env mapping, got " + type(term).__name__
                )
            try:
                resolved = resolve_env(
                    term,
                    os.environ,
                    self.get_option("secrets") or {},
                    self.get_option("bottle"),
                )
            except EnvError as exc:
                raise AnsibleLookupError(str(exc)) from None
            if self.get_option("known_secrets"):
                results.append(secret_values(term, resolved))
            else:
                results.append(resolved)
        return results

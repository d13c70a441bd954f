# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup plugin: a bottle's route credentials, from the controller's environment."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.botbottle.bottle.plugins.module_utils._credentials import (
    CredentialError,
    route_credentials,
)

DOCUMENTATION = r"""
name: bottle_credentials
author: bot-bottle contributors
version_added: 0.1.0
short_description: A bot-bottle manifest's route credentials, from the controller's environment
description:
  - For every route of a bottle with C(auth), the value of the controller's environment
    variable its C(token_ref) names, keyed by that name; what the
    M(botbottle.bottle.docker_bottle) module's O(botbottle.bottle.docker_bottle#module:credentials)
    takes (it hands them to the bottle's egress proxy alone).
  - A variable that is not set, or is empty, fails the lookup with a message naming the variable,
    the bottle and the route, so that bottle is not brought up. No value appears in a message.
  - Pass the result only to no_log options (C(credentials) is one) or tasks with C(no_log).
options:
  _terms:
    description: >-
      The bottle's C(egress.routes) list (as returned by
      P(botbottle.bottle.bottle_manifest#lookup)).
    type: list
    elements: dict
    required: true
  bottle:
    description: Bottle name, for error messages.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: A bottle whose routes carry credentials
  botbottle.bottle.docker_bottle:
    name: "{{ bottle.name }}"
    policy: "{{ bottle.policy }}"
    credentials: >-
      {{ lookup('botbottle.bottle.bottle_credentials',
                bottle.manifest.egress.routes | default([]), bottle=bottle.name) }}
"""

RETURN = r"""
_raw:
  description: The credentials, C(token_ref) to value (secret).
  type: list
  elements: dict
"""


class LookupModule(LookupBase):
    """Read route credentials from the environment."""

    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        # one routes list is one term; a flattened list of routes is the same list
        routes = terms[0] if len(terms) == 1 and isinstance(terms[0], list) else terms
        try:
            return [route_credentials(routes, os.environ, self.get_option("bottle"))]
        except CredentialError as exc:
            raise AnsibleLookupError(str(exc)) from None

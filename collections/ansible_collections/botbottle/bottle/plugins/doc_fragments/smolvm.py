# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every module that talks to smolvm shares (module_utils/_smolvm.py's
CLIENT_ARGUMENT_SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    """``extends_documentation_fragment: botbottle.bottle.smolvm``."""

    DOCUMENTATION = r"""
requirements:
  - The smolvm CLI on the managed host (PyPI C(smolmachines)), as the
    P(botbottle.bottle.smolmachines_host#role) role installs it.
options:
  binary:
    description:
      - Path of the smolvm CLI. By default the one bundled in the virtualenv that bot-bottle's
        C(smolmachines_host) role installs (C(/opt/bot-bottle/smolmachines)), else C(smolvm) on
        E(PATH).
    type: path
  data_home:
    description:
      - smolvm's data directory parent (its E(XDG_DATA_HOME)); the state database is
        C(<data_home>/smolvm/server/smolvm.db). Defaults to the remote user's.
    type: path
  cache_home:
    description: smolvm's cache directory parent (its E(XDG_CACHE_HOME)).
    type: path
"""

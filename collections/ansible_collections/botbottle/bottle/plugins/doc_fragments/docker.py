# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option and requirement every module that talks to the Docker Engine shares
(module_utils/_docker_engine.py's connect)."""

from __future__ import annotations


class ModuleDocFragment:
    """``extends_documentation_fragment: botbottle.bottle.docker``."""

    DOCUMENTATION = r"""
options:
  docker_host:
    description: The engine's address; the local socket (C(unix:///var/run/docker.sock)) by default.
    type: str
requirements:
  - The Docker SDK for Python on the managed host (Debian C(python3-docker), or C(docker)
    from PyPI).
"""

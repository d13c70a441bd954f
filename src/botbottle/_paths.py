"""Where the collection the CLI runs lives, and the Ansible settings of its runs.

The CLI depends on the ``botbottle.bottle`` collection, never the other way round.
The collection is installed with the CLI (the wheel holds it as
``ansible_collections/botbottle/bottle`` in site-packages; an editable install maps
it to the checkout's ``collections/``), so it is found by importing it. Its
playbooks and roles run from there, with this package's ``ansible.cfg``.
"""

from __future__ import annotations

from pathlib import Path

from ansible_collections.botbottle.bottle.plugins.plugin_utils import _manifest

COLLECTION_DIR = Path(_manifest.__file__).resolve().parents[2]
PLAYBOOKS_DIR = COLLECTION_DIR / "playbooks"
# The folder holding ansible_collections/: put first on Ansible's collections path so
# that the playbooks run this very collection, not another copy the user installed.
COLLECTIONS_PATH = COLLECTION_DIR.parents[2]
ANSIBLE_CFG = Path(__file__).resolve().with_name("ansible.cfg")
_DEFAULT_COLLECTIONS_PATHS = ("~/.ansible/collections", "/usr/share/ansible/collections")


def ansible_env() -> dict[str, str]:
    """The environment every ansible-runner call of the CLI gets."""
    return {
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_COLLECTIONS_PATH": ":".join((str(COLLECTIONS_PATH), *_DEFAULT_COLLECTIONS_PATHS)),
    }

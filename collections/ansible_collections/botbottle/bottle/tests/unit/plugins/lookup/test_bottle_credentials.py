"""The controller's side of route credentials: the ``bottle_credentials`` lookup and its
pure logic (module_utils/_credentials.py) take each route's ``token_ref`` from the
controller's environment and fail closed, naming the variable, the bottle and the
route, never a value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _credentials

# The folder that holds ansible_collections/ (this file is in its
# botbottle/bottle/tests/unit/plugins/lookup/): where Ansible finds this copy of the collection.
COLLECTIONS = Path(__file__).resolve().parents[7]

TOKEN = "tok-3f9c1d7e-never-logged"
OTHER = "bearer-51ab0c-also-secret"

# --------------------------------------------------------------------------- controller

ROUTES = [
    {"host": "git.example.com", "auth": {"scheme": "token", "token_ref": "FORGE"}},
    {"host": "open.example.org"},
    {"host": "*.api.example.net", "auth": {"scheme": "Bearer", "token_ref": "API"}},
]


def test_route_credentials_come_from_the_environment_by_token_ref() -> None:
    env = {"FORGE": TOKEN, "API": OTHER, "UNRELATED": "x"}
    assert _credentials.route_credentials(ROUTES, env, "dev") == {"FORGE": TOKEN, "API": OTHER}
    assert _credentials.route_credentials([{"host": "a.example"}], {}, "dev") == {}
    assert _credentials.route_credentials([], {}) == {}


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FORGE": TOKEN}, "bottle 'dev': route 2 (host *.api.example.net) takes its credential "
                          "from the controller's environment variable API, which is not set"),
        ({"FORGE": TOKEN, "API": ""}, "variable API, which is empty"),
    ],
)  # fmt: skip
def test_a_missing_variable_names_itself_the_bottle_and_the_route(
    env: dict[str, str], words: str
) -> None:
    with pytest.raises(_credentials.CredentialError) as caught:
        _credentials.route_credentials(ROUTES, env, "dev")
    assert words in str(caught.value) and "export API" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_the_lookup_plugin_through_ansible() -> None:
    """``lookup('botbottle.bottle.bottle_credentials', routes, bottle=...)`` as the role
    calls it: the values by token_ref (checked by an assert, never printed), and a
    failure naming the variable, the bottle and the route, without any value."""
    call = "lookup('botbottle.bottle.bottle_credentials', routes, bottle='dev')"
    extra = {"routes": ROUTES, "ansible_python_interpreter": "/usr/bin/python3"}
    argv = ["localhost", "-i", "localhost,", "-c", "local", "-o", "-e", json.dumps(extra)]
    expected = json.dumps({"FORGE": TOKEN, "API": OTHER})
    ok = ansible("ansible", *argv, "-m", "assert", "-a",
                 json.dumps({"that": [f"{call} == {expected}"], "quiet": True}),
                 FORGE=TOKEN, API=OTHER)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert TOKEN not in ok.stdout + ok.stderr
    missing = ansible("ansible", *argv, "-m", "assert", "-a",
                      json.dumps({"that": [f"{call} == {{}}"]}), FORGE=TOKEN, API="")  # fmt: skip
    assert missing.returncode != 0, missing.stdout
    text = missing.stdout + missing.stderr
    assert (
        "bottle 'dev': route 2 (host *.api.example.net)" in text and "API, which is empty" in text
    )
    assert TOKEN not in text and OTHER not in text


def ansible(tool: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``ansible``/``ansible-playbook``/… of this virtualenv with this copy of the
    collection as its collections path and no colours, ``extra_env`` added to the
    environment."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        **extra_env,
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )

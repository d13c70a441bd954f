"""Route credentials (issue 14 item 2), every pure part: the manifest's ``auth`` compiled
into the policy by route key, the proxy configuration saying secrets are required, the
runtime secrets loader, the credential decision (keyed on the checked route only, never
over plain HTTP, fail closed), the addon's header replacement on stand-in flows, and the
controller's ``bottle_credentials`` lookup. In the repository, the integration test
(tests/integration/test_docker_bottle_auth.py) runs the real proxy, and
tests/unit/test_cli_validate.py has ``bottle validate`` refuse a bad ``auth``."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import (
    _egress,
    _egress_addon,
    _enforced,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    PolicyError,
    RouteAuth,
    build_policy,
    compile_policy,
    policy_from_dict,
)
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils import egress_fakes
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.egress_fakes import (
    Flow,
    connect,
    fake_mitmproxy,
    log,
    resolve,
    tls,
)

__all__ = ["fake_mitmproxy"]  # the stand-in mitmproxy, autouse here too

TOKEN = "tok-3f9c1d7e-never-logged"
OTHER = "bearer-51ab0c-also-secret"


def manifest(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"egress": {"routes": list(routes), "log": 2}}


AUTHED = compile_policy(
    manifest(
        {"host": "git.example.com", "auth": {"scheme": "token", "token_ref": "FORGE"}},
        {"host": "*.api.example.net", "auth": {"scheme": "Bearer", "token_ref": "API"}},
        {"host": "open.example.org"},
        {"host": "plain.api.example.net"},  # exact below the zone: its own route, no auth
    )
)


# --------------------------------------------------------------------------- compiler


def test_auth_is_compiled_per_route_key_and_hashed() -> None:
    assert AUTHED.auth == (
        ("*.api.example.net", RouteAuth("Bearer", "API")),
        ("git.example.com", RouteAuth("token", "FORGE")),
    )
    assert AUTHED.auth_for("git.example.com") == RouteAuth("token", "FORGE")
    assert AUTHED.auth_for("open.example.org") is None and AUTHED.auth_for(None) is None
    data = AUTHED.to_dict()
    assert data["auth"] == {
        "*.api.example.net": {"scheme": "Bearer", "token_ref": "API"},
        "git.example.com": {"scheme": "token", "token_ref": "FORGE"},
    }
    again = policy_from_dict(json.loads(json.dumps(data)))
    assert again == AUTHED and again.digest == AUTHED.digest
    # the hash covers the credential's variable and scheme
    plain = compile_policy(
        manifest({"host": "git.example.com"}, {"host": "*.api.example.net"},
                 {"host": "open.example.org"}, {"host": "plain.api.example.net"})
    )  # fmt: skip
    assert plain.digest != AUTHED.digest and plain.auth == ()
    other = build_policy(
        AUTHED.exact_hosts, AUTHED.wildcard_zones, log=2,
        auth={**data["auth"], "git.example.com": {"scheme": "Bearer", "token_ref": "FORGE"}},
    )  # fmt: skip
    assert other.digest != AUTHED.digest


def test_a_policy_without_auth_keeps_its_hash() -> None:
    """Policies written before auth existed hash the same (no empty 'auth' in the hash)."""
    policy = build_policy(["a.example.com"], log=1)
    assert policy.digest == build_policy(["a.example.com"], log=1, auth={}).digest
    assert policy.to_dict()["auth"] == {}


def test_routes_of_one_host_share_its_credential() -> None:
    same = {"scheme": "token", "token_ref": "T"}
    policy = compile_policy(
        manifest({"host": "a.example.com"}, {"host": "A.example.com.", "auth": same})
    )
    assert policy.auth == (("a.example.com", RouteAuth("token", "T")),)
    assert (
        compile_policy(
            manifest(
                {"host": "a.example.com", "auth": same}, {"host": "a.example.com", "auth": same}
            )
        ).auth
        == policy.auth
    )


@pytest.mark.parametrize(
    ("routes", "path", "words"),
    [
        (
            [{"host": "a.example.com", "auth": {"scheme": "token", "token_ref": "T"}},
             {"host": "a.example.com", "auth": {"scheme": "Bearer", "token_ref": "T"}}],
            "$.egress.routes[1].auth",
            "route 1 (host a.example.com): route 0 has the same host (a.example.com) with "
            "another credential",
        ),
        (
            [{"cidr": "203.0.113.0/24", "auth": {"scheme": "token", "token_ref": "T"}}],
            "$.egress.routes[0].auth",
            "route 0 (cidr 203.0.113.0/24): a credential is injected on a host route only",
        ),
        (
            [{"host": "a.example.com", "auth": {"scheme": "Basic", "token_ref": "T"}}],
            "$.egress.routes[0].auth.scheme",
            "route 0 (host a.example.com): expected one of ['Bearer', 'token'], got 'Basic'",
        ),
        (
            [{"host": "a.example.com", "auth": {"scheme": "token", "token_ref": "1T"}}],
            "$.egress.routes[0].auth.token_ref",
            "'1T' is not an environment variable name",
        ),
        (
            [{"host": "a.example.com", "auth": {"scheme": "token"}}],
            "$.egress.routes[0].auth",
            "'token_ref' is required",
        ),
    ],
    ids=["two-credentials", "cidr", "scheme", "token-ref", "no-token-ref"],
)  # fmt: skip
def test_bad_auth_names_the_route_and_key(routes: list[Any], path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(manifest(*routes))
    assert caught.value.path == path and words in caught.value.message, caught.value


def test_build_policy_refuses_auth_for_a_key_that_is_not_a_route() -> None:
    with pytest.raises(ValueError, match=r"auth: 'b\.example\.com' is not a route"):
        build_policy(
            ["a.example.com"], auth={"b.example.com": {"scheme": "token", "token_ref": "T"}}
        )
    with pytest.raises(ValueError, match="auth: expected a mapping"):
        build_policy(["a.example.com"], auth=[1])  # type: ignore[arg-type]


def test_docker_enforces_auth_and_smolmachines_refuses_it() -> None:
    data = {
        "egress": {
            "routes": [{"host": "a.example.com", "auth": {"scheme": "token", "token_ref": "T"}}]
        }
    }
    assert _enforced.enforces(_enforced.DOCKER, "egress.routes[].auth")
    assert [u.key for u in _enforced.unenforced(data, "docker")] == []
    refused = _enforced.unenforced(data, "smolmachines")
    assert [(u.key, u.path) for u in refused] == [
        ("egress.routes[].auth", "$.egress.routes[0].auth")
    ]
    assert "no credential is injected" in refused[0].message()


# --------------------------------------------------------------------------- config


def test_the_config_says_whether_runtime_secrets_are_required() -> None:
    data = _egress.render_config(AUTHED, "172.30.0.2")
    assert data["secrets"] == {"file": "/run/bot-bottle/secrets.json", "required": True}
    config = _egress.config_from_dict(data)
    assert config.secrets_file == _egress.SECRETS_PATH and config.secrets_required
    quiet = _egress.render_config(build_policy(["a.example.com"]), "172.30.0.2")
    assert quiet["secrets"]["required"] is False
    assert TOKEN not in _egress.dumps_config(data)


@pytest.mark.parametrize(
    ("secrets", "words"),
    [
        ({"file": _egress.SECRETS_PATH, "required": False}, "secrets.required: expected True"),
        ({"file": None, "required": True}, "secrets.file: routes"),
        ({"file": "relative", "required": True}, "secrets.file: expected null or an absolute"),
        ({"file": None}, "secrets: expected"),
        ({"file": None, "required": "yes"}, "secrets.required: expected true or false"),
        (None, "secrets.required: expected True"),  # left out: not required
    ],
)
def test_a_config_inconsistent_about_secrets_is_refused(secrets: Any, words: str) -> None:
    data = _egress.render_config(AUTHED, "172.30.0.2")
    if secrets is None:
        del data["secrets"]
    else:
        data["secrets"] = secrets
    with pytest.raises(_egress.ConfigError, match=words.replace("[", r"\[").replace("(", r"\(")):
        _egress.config_from_dict(data)


# --------------------------------------------------------------------------- secrets


def test_secrets_round_trip_and_never_show_a_value(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    assert _egress.load_secrets(str(path)) is None  # not delivered yet
    assert _egress.secrets_stamp(str(path)) is None
    path.write_bytes(_egress.dumps_secrets({"FORGE": TOKEN}, [OTHER]))
    found = _egress.load_secrets(str(path))
    assert found is not None
    assert found.credentials == {"FORGE": TOKEN} and found.known_secrets == (OTHER,)
    assert found.values == tuple(sorted((TOKEN, OTHER)))
    assert TOKEN not in repr(found) and OTHER not in repr(found)
    stamp = _egress.secrets_stamp(str(path))
    path.write_bytes(_egress.dumps_secrets({"FORGE": TOKEN + "x"}))
    assert _egress.secrets_stamp(str(path)) != stamp


@pytest.mark.parametrize(
    "text",
    [
        f"not json {TOKEN}",
        json.dumps({"format": 2, "credentials": {"FORGE": TOKEN}}),
        json.dumps({"format": 1, "credentials": {"FORGE": [TOKEN]}}),
        json.dumps({"format": 1, "credentials": {}, "known_secrets": TOKEN}),
    ],
)
def test_bad_secrets_are_refused_without_quoting_them(tmp_path: Path, text: str) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(text)
    with pytest.raises(_egress.SecretsError) as caught:
        _egress.load_secrets(str(path))
    assert TOKEN not in str(caught.value) and str(path) in str(caught.value)


# --------------------------------------------------------------------------- decision

CONFIG = _egress.config_from_dict(_egress.render_config(AUTHED, "172.30.0.2"))
SECRETS = _egress.Secrets({"FORGE": TOKEN, "API": OTHER})


def test_the_credential_follows_the_checked_route() -> None:
    cred = _egress.credential_for(CONFIG, "git.example.com", scheme="https", secrets=SECRETS)
    assert cred is not None and cred.header == f"token {TOKEN}" and cred.token_ref == "FORGE"
    assert TOKEN not in repr(cred)
    cred = _egress.credential_for(CONFIG, "*.api.example.net", scheme="https", secrets=SECRETS)
    assert cred is not None and cred.header == f"Bearer {OTHER}"
    for route in ("open.example.org", "plain.api.example.net", None):
        assert _egress.credential_for(CONFIG, route, scheme="https", secrets=SECRETS) is None
    # the route key comes from check_request on the checked identity: an exact route
    # below a credentialed zone is its own route and gets nothing
    target = _egress.parse_authority("plain.api.example.net:443")
    assert _egress.check_request(CONFIG, target, method="GET", path="/", headers=[]) == (
        "plain.api.example.net"
    )
    target = _egress.parse_authority("x.api.example.net:443")
    route = _egress.check_request(CONFIG, target, method="GET", path="/", headers=[])
    assert route == "*.api.example.net"


def test_no_credential_over_plain_http_and_none_missing() -> None:
    with pytest.raises(_egress.RefusedError) as caught:
        _egress.credential_for(CONFIG, "git.example.com", scheme="http", secrets=SECRETS)
    assert (caught.value.status, caught.value.rule) == (403, "auth-over-http")
    assert TOKEN not in caught.value.reason
    cases = [
        (None, "not delivered yet"),
        (_egress.Secrets({"API": OTHER}), "without FORGE"),
        (_egress.Secrets({"FORGE": ""}), "without FORGE"),
    ]
    for secrets, words in cases:
        with pytest.raises(_egress.RefusedError) as caught:
            _egress.credential_for(CONFIG, "git.example.com", scheme="https", secrets=secrets)
        assert (caught.value.status, caught.value.rule) == (503, "credential-missing")
        assert words in caught.value.reason and "FORGE" in caught.value.reason


# --------------------------------------------------------------------------- addon


class Headers:
    """mitmproxy's Headers as the addon uses them: fields, case-insensitive pop and set."""

    def __init__(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        self.fields = tuple(fields)

    def pop(self, name: str, default: Any = None) -> Any:
        kept = tuple(f for f in self.fields if f[0].lower() != name.lower().encode())
        found = len(kept) != len(self.fields)
        self.fields = kept
        return True if found else default

    def __setitem__(self, name: str, value: str) -> None:
        self.pop(name)
        self.fields += ((name.encode(), value.encode()),)

    def get(self, name: str, default: Any = None) -> Any:
        found = self.values(name)
        return found[0] if found else default

    def values(self, name: str) -> list[str]:
        return [v.decode() for n, v in self.fields if n.lower() == name.lower().encode()]


def flow(**kwargs: Any) -> Flow:
    made = Flow(**kwargs)
    made.request.headers = Headers(made.request.headers.fields)
    made.request.raw_content = b""
    return made


@pytest.fixture
def addon(tmp_path: Path) -> Iterator[_egress_addon.EgressAddon]:
    instance = _egress_addon.EgressAddon(resolve=resolve, out=io.StringIO())
    data = _egress.render_config(AUTHED, "172.30.0.2")
    data["secrets"]["file"] = str(tmp_path / "secrets.json")
    instance.config = _egress.config_from_dict(data)
    yield instance


def deliver(addon: _egress_addon.EgressAddon, credentials: dict[str, str]) -> None:
    assert addon.config is not None and addon.config.secrets_file is not None
    path = Path(addon.config.secrets_file)
    temp = path.with_suffix(".tmp")
    temp.write_bytes(_egress.dumps_secrets(credentials))
    os.replace(temp, path)


def tunnel_request(addon: _egress_addon.EgressAddon, host: str, client: str, **kwargs: Any) -> Flow:
    """CONNECT host:443, TLS with SNI host, then one request (Host given or host)."""
    connect(addon, f"{host}:443", client)
    addon.tls_clienthello(tls(client, host))
    made = flow(client=client, host=host, hosts=kwargs.pop("hosts", [host]), **kwargs)
    asyncio.run(addon.requestheaders(made))
    asyncio.run(addon.request(made))
    return made


ADDRESSES = {
    "git.example.com": "198.51.100.9",
    "open.example.org": "198.51.100.10",
    "x.api.example.net": "198.51.100.11",
    "plain.api.example.net": "198.51.100.12",
}


@pytest.fixture(autouse=True)
def _addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        egress_fakes,
        "ADDRESSES",
        {**egress_fakes.ADDRESSES, **{k: [v] for k, v in ADDRESSES.items()}},
    )


def test_the_addon_replaces_the_agents_authorization_on_the_credentialed_route(
    addon: _egress_addon.EgressAddon,
) -> None:
    deliver(addon, {"FORGE": TOKEN, "API": OTHER})
    agent_sent = [("Authorization", "Bearer agent-own"), ("authorization", "Basic x"),
                  ("Proxy-Authorization", "Basic y"), ("X-Keep", "1")]  # fmt: skip
    sent = tunnel_request(addon, "git.example.com", "c1", headers=agent_sent)
    assert sent.response is None, sent.response and sent.response.content
    assert sent.request.headers.values("authorization") == [f"token {TOKEN}"]
    assert sent.request.headers.values("proxy-authorization") == []
    assert sent.request.headers.values("x-keep") == ["1"]
    # the control's mirror image: a route without auth passes the agent's header as is
    other = tunnel_request(addon, "open.example.org", "c2", headers=agent_sent[:1])
    assert other.response is None
    assert other.request.headers.values("authorization") == ["Bearer agent-own"]
    # wildcard route, HTTP/2 spelling
    h2 = tunnel_request(addon, "x.api.example.net", "c3", http2=True, authority="x.api.example.net")
    assert h2.response is None and h2.request.headers.values("authorization") == [f"Bearer {OTHER}"]
    entries = [e for e in log(addon) if e["event"] == "request"]
    assert [e.get("credential") for e in entries] == ["FORGE", None, "API"]
    assert TOKEN not in json.dumps(log(addon)) and OTHER not in json.dumps(log(addon))
    assert set(addon.secrets) == {TOKEN, OTHER}


def test_a_spoofed_host_from_another_route_gets_no_token(
    addon: _egress_addon.EgressAddon,
) -> None:
    deliver(addon, {"FORGE": TOKEN, "API": OTHER})
    assert tunnel_request(addon, "git.example.com", "c1").request.headers.values(
        "authorization"
    ) == [f"token {TOKEN}"]  # the control
    spoofed = tunnel_request(addon, "open.example.org", "c2", hosts=["git.example.com"])
    assert spoofed.response is not None and spoofed.response.status_code == 421
    assert spoofed.request.headers.values("authorization") == []
    assert "bb_egress_credential" not in spoofed.metadata


def test_plain_http_on_a_credentialed_route_is_refused(addon: _egress_addon.EgressAddon) -> None:
    deliver(addon, {"FORGE": TOKEN})
    made = flow(host="git.example.com", port=80, hosts=["git.example.com"], scheme="http",
                headers=[("Authorization", "token guess")])  # fmt: skip
    asyncio.run(addon.requestheaders(made))
    assert made.response is not None and made.response.status_code == 403
    assert made.response.headers["x-bot-bottle-refused"] == "auth-over-http"
    assert TOKEN not in made.request.headers.values("authorization")[0]


def test_missing_credentials_fail_closed_and_a_redelivery_is_read(
    addon: _egress_addon.EgressAddon,
) -> None:
    first = tunnel_request(addon, "git.example.com", "c1")  # nothing delivered yet
    assert first.response is not None and first.response.status_code == 503
    assert first.response.headers["x-bot-bottle-refused"] == "credential-missing"
    deliver(addon, {"API": OTHER})  # delivered, without FORGE
    second = tunnel_request(addon, "git.example.com", "c2")
    assert second.response is not None and second.response.status_code == 503
    deliver(addon, {"FORGE": TOKEN, "API": OTHER})
    third = tunnel_request(addon, "git.example.com", "c3")
    assert third.response is None
    assert third.request.headers.values("authorization") == [f"token {TOKEN}"]
    # withdrawn between the check and the send: the request is not sent bare
    made = flow(client="c3", host="git.example.com", hosts=["git.example.com"])
    asyncio.run(addon.requestheaders(made))
    assert addon.config is not None and addon.config.secrets_file is not None
    os.unlink(addon.config.secrets_file)
    asyncio.run(addon.request(made))
    assert made.response is not None and made.response.status_code == 503
    assert made.request.headers.values("authorization") == []


def test_an_unreadable_secrets_file_counts_as_not_delivered(
    addon: _egress_addon.EgressAddon,
) -> None:
    assert addon.config is not None and addon.config.secrets_file is not None
    Path(addon.config.secrets_file).write_text(f"garbage {TOKEN}")
    made = tunnel_request(addon, "git.example.com", "c1")
    assert made.response is not None and made.response.status_code == 503
    assert TOKEN not in json.dumps(log(addon))

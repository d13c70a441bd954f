"""An egress proxy that lets through what the real one refuses, for the test that
``bottle verify`` catches it.

Runs inside the egress proxy image like the real command (``python3 -P
egress_lax_proxy.py ARGS``): it replaces two decisions the addon calls so that a
CONNECT to any authority is accepted (IP literals no ``cidr`` route covers too) and
a request's Host is never compared with the tunnel, then starts the real proxy
(``main``). Everything else - the allowed host, TLS with the bottle CA, pinning - is
unchanged (the positive control still passes).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress, _egress_addon


def connect_target(config: Any, raw: str) -> Any:
    return _egress.parse_authority(raw)


def request_target(config: Any, tunnel: Any, **kwargs: Any) -> Any:
    return tunnel


_egress.connect_target = connect_target
_egress.request_target = request_target

if __name__ == "__main__":
    _egress_addon.main()

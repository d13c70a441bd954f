"""The egress proxy with faults injected, for the test that an addon exception closes
the flow instead of passing it.

Runs inside the egress proxy image like the real command (``python3 -P
egress_faulty_proxy.py ARGS``): it wraps three of the decision functions the addon
calls so that they raise ``RuntimeError`` for names starting with ``fault-connect``,
``fault-sni`` or ``fault-request``, then starts the real proxy (``main``). The addon
itself is unchanged; every other name is decided as usual (the positive control).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress, _egress_addon

_connect_target = _egress.connect_target
_check_sni = _egress.check_sni
_request_target = _egress.request_target


def connect_target(config: Any, raw: str) -> Any:
    if raw.startswith("fault-connect"):
        raise RuntimeError("injected fault in connect_target")
    return _connect_target(config, raw)


def check_sni(tunnel: Any, sni: str | None) -> None:
    if tunnel.host.startswith("fault-sni"):
        raise RuntimeError("injected fault in check_sni")
    _check_sni(tunnel, sni)


def request_target(config: Any, tunnel: Any, **kwargs: Any) -> Any:
    if str(kwargs.get("url_host", "")).startswith("fault-request") or (
        tunnel is not None and tunnel.host.startswith("fault-request")
    ):
        raise RuntimeError("injected fault in request_target")
    return _request_target(config, tunnel, **kwargs)


_egress.connect_target = connect_target
_egress.check_sni = check_sni
_egress.request_target = request_target

if __name__ == "__main__":
    _egress_addon.main()

"""Entry point used by start.sh: ``python -m localstack.runtime.main`` bound to loopback.

LocalStack 4.9.2's default (twisted) gateway ignores the host part of GATEWAY_LISTEN for
IPv4 addresses and listens on 0.0.0.0 (see the ``TODO: interface = host?`` in
localstack/runtime/server/twisted.py). GATEWAY_SERVER=hypercorn does honour the host but
sends about 40% fewer messages/s, so instead we make twisted's TCP4ServerEndpoint default
to the GATEWAY_LISTEN host for that port (127.0.0.1 for any other port) and then run the
stock runtime entry point unchanged.
"""

from __future__ import annotations

import runpy
from typing import Any

from localstack import config
from twisted.internet import endpoints

_LISTEN_HOSTS = {hp.port: hp.host for hp in config.GATEWAY_LISTEN}
_TCP4ServerEndpoint = endpoints.TCP4ServerEndpoint


class _LoopbackTCP4ServerEndpoint(_TCP4ServerEndpoint):  # type: ignore[misc,valid-type]
    def __init__(self, reactor: Any, port: int, backlog: int = 50, interface: str = "") -> None:
        if interface in ("", "0.0.0.0"):
            interface = _LISTEN_HOSTS.get(port) or "127.0.0.1"
        super().__init__(reactor, port, backlog, interface)


endpoints.TCP4ServerEndpoint = _LoopbackTCP4ServerEndpoint  # type: ignore[misc]

if __name__ == "__main__":
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)

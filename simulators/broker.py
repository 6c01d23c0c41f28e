"""An embedded MQTT broker (amqtt, pure Python) for `tanji demo`: no system service needed.

Production and the test suite use a real Mosquitto; this exists so the demo runs anywhere.
Binds 127.0.0.1 only, anonymous access (loopback-only demo).
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker


class EmbeddedBroker:
    """`async with EmbeddedBroker(host, port):` serves MQTT 3.1.1 on host:port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    async def __aenter__(self) -> EmbeddedBroker:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self._broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.shutdown()

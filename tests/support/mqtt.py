"""Reading what a broker holds for a topic, as a platform subscribing now would see it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt

from cloud_sync import MqttConfig


async def retained(config: MqttConfig, topic: str) -> dict[str, Any]:
    """The retained JSON message on `topic` (a fresh session: nothing queued from before)."""
    kwargs = config.client_kwargs("retained-reader") | {"properties": None}
    if config.protocol == "3.1.1":
        kwargs["clean_session"] = True
    async with aiomqtt.Client(**kwargs) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                loaded: dict[str, Any] = json.loads(message.payload)
                return loaded
    raise AssertionError(f"nothing retained on {topic}")

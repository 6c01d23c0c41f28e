"""The MQTT transport: broker URL, TLS, client identity, credentials, and the session.

`mqtts://` means TLS 1.2 or newer with the server's certificate verified (against `ca_file`,
else the system's trust store) and its name checked; there is no switch to turn verification
off and no fallback to plaintext. A client certificate (`cert_file` + `key_file`) gives mutual
TLS. The password comes from a file or an environment variable, never from site.toml, and is
never logged; over plain `mqtt://` it is sent only to this machine's own broker unless
`allow_plaintext_password` says the network is trusted. The gateway and the platform
simulator connect through the same settings.

A session (`MqttTransport`) is a persistent MQTT session: batches go out with QoS 1 on
`{prefix}/{uscc}/{gateway_id}/activity|readings`, acks come in on `.../ack`, and the link
announces itself on `.../status` (retained `online` when connected, `offline` when stopped,
and the broker publishes the retained last will, `offline`/`lost`, when it dies unannounced).
What is delivered when is decided by delivery (cloud_sync/sync.py), not here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, field_validator, model_validator

from cloud_sync.contract import Topics
from cloud_sync.tls import TlsFiles
from cloud_sync.transport import (
    InboundMessage,
    LinkConfig,
    Outgoing,
    StatusMessage,
    TransportError,
    announce_stopped,
    checked_url,
    is_loopback,
    step,
)
from gateway.models import ConfigBool, ConfigFloat, ConfigPath, in_range

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


class MqttConfig(LinkConfig, TlsFiles):
    """`[mqtt]`: how to reach the platform's broker. (The delivery policy older site files
    give here is the site's to move to `[delivery]`: cloud_sync.policy.LegacyPolicy.)"""

    section: ClassVar[str] = "mqtt"
    ack_channel: ClassVar[str] = "on the ack topic"

    broker_url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    username: str | None = None
    password_file: ConfigPath | None = None
    password_env: str | None = None
    keepalive_s: Annotated[int, in_range(5, 3600)] = 20
    session_expiry_s: Annotated[int, in_range(0, 0xFFFFFFFF)] = 7 * 86400
    publish_timeout_s: ConfigFloat = Field(default=10.0, ge=0.01, le=600)
    allow_plaintext_password: ConfigBool = Field(
        default=False,
        description="send the password over plain mqtt:// to a host that is not this machine"
        " (anyone on the path can read it); `tanji run` warns at start",
    )

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: str) -> str:
        checked_url(
            v,
            DEFAULT_PORTS,
            "mqtt:// or mqtts:// (TLS)",
            "mqtts://platform.example.cn:8883",
            "use username and password_file",
        )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(
                "ca_file/cert_file/key_file are given but broker_url is plaintext mqtt://;"
                " use mqtts:// (nothing is sent in plaintext when TLS was meant)"
            )
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        if self.plaintext_password and not self.allow_plaintext_password:
            field = "password_env" if self.password_env else "password_file"
            raise ValueError(
                f"{field}: the password would cross the network in clear (broker_url is plain"
                f" mqtt:// to {self.host}, not this machine); use mqtts://, or set"
                " allow_plaintext_password = true if that network is trusted"
            )
        return self

    @property
    def plaintext_password(self) -> bool:
        """A password goes over plain mqtt:// to a broker that is not on this machine."""
        has_password = bool(self.password_file or self.password_env)
        return has_password and not self.tls and not is_loopback(self.host)

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker_url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def dead_link_bound_s(self) -> float:
        """A silent link is noticed within this time: paho sends PINGREQ after `keepalive_s`
        without traffic and drops the link when nothing arrives for another `keepalive_s`
        (checked every second); an unanswered publish fails after `publish_timeout_s`."""
        return 2 * self.keepalive_s + 1.0

    def password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise TransportError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise TransportError(f"password_file {self.password_file}: {exc}") from None
        return None

    @property
    def peer(self) -> str:
        return f"broker {self.host}"

    @property
    def peer_is_local(self) -> bool:
        return is_loopback(self.host)

    def checks(self) -> tuple[Callable[[], object], ...]:
        return (self.tls_context, self.password)

    def transport(self, topics: Topics, client_id: str, status: StatusMessage) -> MqttTransport:
        return MqttTransport(self, topics, self.client_id or client_id, status)

    def tls_context(self) -> ssl.SSLContext | None:
        """The verified TLS context for mqtts:// (cloud_sync.tls), None for plain mqtt://."""
        return self.verified_context() if self.tls else None

    def describe_error(self, exc: BaseException) -> str:
        """A broker error in words an operator can act on (TLS problems name the
        certificate)."""
        peer = f"broker {self.host}:{self.port}"
        return self.tls_failure(exc, peer, self.section) or str(exc)

    def client_kwargs(self, client_id: str, will: aiomqtt.Will | None = None) -> dict[str, Any]:
        """Keyword arguments for `aiomqtt.Client` with a persistent session."""
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "identifier": client_id,
            "keepalive": self.keepalive_s,
            "timeout": self.publish_timeout_s,
            "username": self.username,
            "password": self.password(),
            "will": will,
            "tls_context": self.tls_context(),
            # small messages (acks, PUBACKs) go out at once: with Nagle's algorithm each
            # waited for the peer's delayed ACK, ~40 ms per batch round trip
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
            kwargs |= {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": False,
                "properties": props,
            }
        else:
            kwargs |= {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        return kwargs


class LastError(logging.Handler):
    """Keeps paho's last error message: a TLS alert after the handshake (a refused client
    certificate) reaches us only as a missing CONNACK, and this says why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def inbound(message: aiomqtt.Message) -> InboundMessage:
    payload = message.payload
    if not isinstance(payload, bytes | bytearray):
        payload = b"" if payload is None else str(payload).encode()
    return InboundMessage(message.topic.value, bytes(payload), bool(message.retain))


class MqttTransport:
    """One gateway's persistent MQTT session with the broker (cloud_sync.transport.Transport):
    subscribed to its ack topic, `online` announced on connecting, `offline` when stopped."""

    def __init__(
        self, config: MqttConfig, topics: Topics, client_id: str, status: StatusMessage
    ) -> None:
        self.config = config
        self.topics = topics
        self.client_id = client_id
        self._status = status
        self._client: aiomqtt.Client | None = None
        self._paho_log = logging.getLogger(f"{__name__}.paho.{client_id}")
        self._paho_errors = LastError()
        self._paho_log.addHandler(self._paho_errors)

    def _error(self, exc: BaseException) -> TransportError:
        return TransportError(self.config.describe_error(exc))

    async def __aenter__(self) -> Self:
        self._paho_errors.message = None
        will = aiomqtt.Will(self.topics.status, self._status("offline", "lost"), 1, True)
        client = aiomqtt.Client(
            **self.config.client_kwargs(self.client_id, will), logger=self._paho_log
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            text = self.config.describe_error(exc)
            if self._paho_errors.message:
                text = f"{text} while connecting: {self._paho_errors.message}"
            raise TransportError(text) from exc
        self._client = client
        try:
            await client.subscribe(self.topics.ack, qos=1)
            await client.publish(
                self.topics.status, self._status("online", None), qos=1, retain=True
            )
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, aiomqtt.MqttError):
                raise self._error(exc) from exc
            raise
        log.info("connected to broker %s:%d", self.config.host, self.config.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return

        async def stopped() -> None:  # a clean disconnect does not fire the last will
            status = self._status("offline", "stopped")
            await client.publish(self.topics.status, status, 1, retain=True)

        await announce_stopped(exc_type, stopped, (aiomqtt.MqttError,))
        with contextlib.suppress(aiomqtt.MqttError):  # a link already dead
            await client.__aexit__(exc_type, exc, tb)

    def _session(self) -> aiomqtt.Client:
        if self._client is None:
            raise TransportError("not connected to the broker")
        return self._client

    async def send(self, message: Outgoing) -> None:
        topic = self.topics.activity if message.kind == "activity" else self.topics.readings
        try:
            # QoS 1: returns at the broker's PUBACK
            await self._session().publish(topic, message.payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc

    async def received(self) -> AsyncIterator[list[InboundMessage]]:
        messages = self._session().messages

        async def next_message() -> InboundMessage:
            return inbound(await anext(messages))

        try:
            while True:
                yield await step(next_message, lambda: len(messages) > 0)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc

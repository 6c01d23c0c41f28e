"""The seam between delivery and the wire: what a transport to the platform must do.

Delivery (cloud_sync/sync.py: the outbox window, the live and backlog lanes, resends, acks
and their verification, the raw readings stream) talks to the platform only through a
`Transport`, made by the `LinkConfig` of the section `[platform] transport` names. A transport
moves bytes: it sends a batch and hands back whatever may be an ack; it decides nothing about
what is delivered. MQTT is one (cloud_sync/mqtt.py); another is one module with its config.
docs/architecture.md, "Where to add a sink", walks through adding one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, Protocol, Self
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, field_validator

from cloud_sync.acks import MAX_KEY_FILE_BYTES, AckKeys
from cloud_sync.contract import Topics
from gateway.errors import TanjiError, TanjiFailure
from gateway.models import ConfigPath, Frozen

GZIP_MAGIC = b"\x1f\x8b"
MAX_PER_STEP = 500  # messages a transport hands on in one step of `received` (one commit)
STOP_ANNOUNCE_S = 2.0  # a stopping gateway says so within this, or goes without a word


class TransportError(TanjiFailure):
    """The link cannot be set up as configured (an unreadable key, a missing password) or it
    failed (peer unreachable, TLS refused, connection lost, a send timed out). The message is
    for an operator: it names the file, the host or the certificate. Delivery records it as
    the link's last error, ends the session and connects again with backoff."""


class BatchRefused(TanjiError):
    """The next hop refused this one batch as sent and will refuse it again (HTTPS: 400, the
    platform cannot read it; 413, it is too large); the link is fine and other batches go.
    The message is for an operator: the peer, its answer, the batch. Delivery does not end
    the session: a readings batch counts as rejected (the stream moves on, the readings stay
    in the store); an activity batch stays in the outbox, is sent again after
    `ack_timeout_s`, and is counted (`tanji status`)."""


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves the
    machine. Names are not resolved: any other name counts as the network."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(
    v: str, schemes: Collection[str], allowed: str, example: str, login: str
) -> SplitResult:
    """A transport's URL, parsed, or ValueError saying what is wrong with it: a scheme not
    in `schemes` (`allowed` says which), no host (`example` shows one), a bad port, or
    credentials (`login` says where they go instead)."""
    parts = urlsplit(v)
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be {allowed} (got {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise ValueError(f"needs a host, e.g. {example}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError("port must be 1..65535") from None
    if parts.username or parts.password:
        raise ValueError(f"put no credentials in the URL: {login}")
    return parts


@dataclass(frozen=True)
class Outgoing:
    """One batch for the platform, exactly as it is to be delivered."""

    kind: Literal["activity", "readings"]  # which stream (MQTT: the topic's last level)
    batch_id: str  # content-derived (platform contract): the platform's dedup key
    payload: bytes  # the batch's JSON, or that JSON gzip-compressed

    @property
    def compressed(self) -> bool:
        return self.payload[:2] == GZIP_MAGIC  # JSON never starts with these bytes


@dataclass(frozen=True)
class InboundMessage:
    """A message that may be an ack, as received, before anything is believed of it.

    `topic` is where it came from on a transport with topics (delivery drops it unless it is
    the gateway's ack topic); None on a transport that answers its own requests (the ack in
    an HTTP response). `retain`: the broker kept it (a leftover, never believed).
    """

    topic: str | None
    payload: bytes
    retain: bool = False


StatusMessage = Callable[[str, str | None], bytes]
"""`status(state, reason)`: the gateway's `tanji.status/1` message (delivery builds it), e.g.
("online", None), ("offline", "lost"), ("offline", "stopped"). A transport announces it
where it has a place for it (MQTT: retained on `.../status`, and as the last will)."""


class Transport(Protocol):
    """One link to the platform. `async with transport:` is one session, from connecting to
    disconnecting; delivery enters the same transport again after a failure (never nested).

    - `__aenter__` returns when batches can be sent and acks received; TransportError when
      the peer cannot be reached or refuses the gateway (the message says why).
    - `__aexit__` disconnects and never raises for a link already dead. A session ended by
      cancellation (the gateway stopping) announces `status("offline", "stopped")` where the
      transport can, within about 2 s.
    - `send` returns when the next hop has the batch (MQTT: the broker's PUBACK, QoS 1; a
      request/response transport: the response arrived and its body was queued for
      `received`). That settles nothing: only the platform's ack does, and delivery sends the
      same batch again after `ack_timeout_s` without one. It may be called concurrently (the
      window of batches in flight, and the readings stream). It gives up within a bounded
      time; a link that fails raises TransportError and delivery starts a new session, in
      which every unacked batch is due again. A next hop that refuses this one batch (and
      would refuse it again) while the link is fine raises BatchRefused.
    - `received` yields, for the whole session, the messages that may be acks as they
      arrive: each step the ones that came since the last, at least one and at most
      MAX_PER_STEP (delivery settles a step in one transaction). It ends only when the link fails
      (TransportError). Everything that arrives is handed on: delivery reads, verifies,
      counts and drops what is no ack of ours.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    async def send(self, message: Outgoing) -> None: ...

    def received(self) -> AsyncIterator[list[InboundMessage]]: ...


async def step(
    next_message: Callable[[], Awaitable[InboundMessage]], more: Callable[[], bool]
) -> list[InboundMessage]:
    """One step of `Transport.received`: the next message (waited for), then those that
    have arrived already (`more()`), at most MAX_PER_STEP."""
    received = [await next_message()]
    while more() and len(received) < MAX_PER_STEP:
        received.append(await next_message())
    return received


async def announce_stopped(
    exc_type: type[BaseException] | None,
    announce: Callable[[], Awaitable[object]],
    dead_link: tuple[type[BaseException], ...] = (),
) -> None:
    """In a session's `__aexit__`: when the session ends by cancellation (the gateway
    stopping), `announce()` the gateway's `offline`/`stopped` within STOP_ANNOUNCE_S, best
    effort; a link that fails meanwhile (TransportError or `dead_link`) goes without a word."""
    if exc_type is None or not issubclass(exc_type, asyncio.CancelledError):
        return
    with contextlib.suppress(TransportError, TimeoutError, *dead_link):
        await asyncio.wait_for(announce(), STOP_ANNOUNCE_S)


class LinkConfig(Frozen):
    """The base of a transport's section in site.toml (`[mqtt]`, ...): how to reach the
    platform and who it is. A transport's config adds its own fields and implements `peer`,
    `peer_is_local`, `checks` and `transport`, says its `section` and `ack_channel`, and
    describes its own failures (`describe_error`);
    `topic_prefix` and `platform_ack_key` (with `ack_keys`, `unsigned_acks_problem`,
    `problems`) are common to all."""

    section: ClassVar[str]
    """Its section in site.toml (and `[platform] transport`), for messages: 'mqtt'."""
    ack_channel: ClassVar[str]
    """Where acks arrive, in the transport's words, for messages: 'on the ack topic'."""

    topic_prefix: str = Field(
        default="tanji/v1",
        description="the contract's address prefix: `{prefix}/{uscc}/{gateway_id}/...`",
    )
    platform_ack_key: ConfigPath | None = Field(
        default=None,
        description="the platform's public key(s) (PEM, ECDSA P-256) its acks are signed"
        " with; required unless the platform's end of the link is on this machine",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be non-empty, without wildcards or leading/trailing '/'")
        return v

    @property
    def peer(self) -> str:
        """The far end, for messages: e.g. 'broker platform.example.cn'."""
        raise NotImplementedError

    @property
    def peer_is_local(self) -> bool:
        """The far end is on this machine (`is_loopback`): only then may acks be unsigned."""
        raise NotImplementedError

    def checks(self) -> tuple[Callable[[], object], ...]:
        """Each reads one thing the link needs from this machine (CA, client certificate and
        key, password) and raises TransportError naming it when it cannot."""
        raise NotImplementedError

    def describe_error(self, exc: BaseException) -> str:
        """A failure of this link (`exc`, as its client library raised it) in words an
        operator can act on; each transport names what it can (the certificate refused,
        the host). The TransportError a session raises carries this text."""
        return f"{self.peer}: {type(exc).__name__}: {exc}"

    def notes(self) -> list[str]:
        """What this section allows but whoever runs the site should hear about (without its
        section name): `tanji check-config` prints them, `tanji run` logs them."""
        return []

    def problems(self) -> list[str]:
        """What the link needs from this machine and cannot read, every one (the checks and
        the ack key); `tanji check-config` and `tanji run` ask this before anything starts."""
        found = []
        for check in (*self.checks(), self.ack_keys):
            try:
                check()
            except TransportError as exc:
                found.append(str(exc))
        return found

    def transport(self, topics: Topics, client_id: str, status: StatusMessage) -> Transport:
        """The link of gateway (`topics.uscc`, `topics.gateway_id`); `client_id` names it
        to the platform (default `tanji-{gateway_id}`)."""
        raise NotImplementedError

    def ack_keys(self) -> AckKeys | None:
        """The platform's ack-verification keys from `platform_ack_key` (None when unset);
        TransportError naming the file when it cannot be read or holds no P-256 key."""
        if self.platform_ack_key is None:
            return None
        path = self.platform_ack_key
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
            if len(data) > MAX_KEY_FILE_BYTES:
                raise ValueError(f"is larger than {MAX_KEY_FILE_BYTES} bytes")
            return AckKeys.from_pem(data)
        except OSError as exc:
            raise TransportError(f"platform_ack_key {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise TransportError(f"platform_ack_key {path}: {exc}") from None

    def unsigned_acks_problem(self) -> str | None:
        """Why this link must not believe unsigned acks, or None: no `platform_ack_key`
        while the far end is not on this machine (a gateway's site only; the platform
        simulator signs rather than verifies)."""
        if self.platform_ack_key is not None or self.peer_is_local:
            return None
        return (
            f"is required: the {self.peer} is not on this machine, and without the"
            " platform's public key anyone who could send on the gateway's ack channel could"
            " mark batches delivered or dead-letter them (docs/platform-contract.md,"
            " Ack signatures)"
        )


__all__ = [
    "BatchRefused",
    "InboundMessage",
    "LinkConfig",
    "Outgoing",
    "StatusMessage",
    "Transport",
    "TransportError",
    "announce_stopped",
    "checked_url",
    "is_loopback",
    "step",
]

"""The HTTPS transport: the same batches and acks as over MQTT, as JSON over HTTP/1.1 with
mutual TLS (docs/platform-contract.md, "HTTPS binding"), for platforms that take HTTPS.

`POST {url}/{topic_prefix}/{uscc}/{gateway_id}/activity` (or `.../readings`) carries a batch;
the response body (200) is the platform's signed ack, handed to delivery like an ack off the
MQTT ack topic: delivery verifies it and decides. A session starts by posting the gateway's
`online` status (which proves the TLS handshake, client certificate included) and ends with
`offline`/`stopped` when the gateway stops. TLS is always on: the platform's certificate is
verified (against `ca_file`, else the system's trust store) and its name checked; there is no
switch to turn that off and no plaintext `http://`. What is delivered when is decided by
delivery (cloud_sync/sync.py), never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Annotated, ClassVar, Self
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator

from cloud_sync.contract import Topics
from cloud_sync.tls import TlsFiles
from cloud_sync.transport import (
    BatchRefused,
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
from gateway.models import ConfigFloat, in_range

log = logging.getLogger(__name__)

MAX_RESPONSE = 64 * 1024  # read no more of an answer (an ack is at most 16 KiB)
# answers refusing one batch, not the link (BatchRefused)
PER_BATCH = {400: "the platform could not read it", 413: "it is too large for the platform"}


class HttpsConfig(LinkConfig, TlsFiles):
    """`[https]`: how to reach a platform that takes HTTPS, and who this gateway is to it."""

    section: ClassVar[str] = "https"
    ack_channel: ClassVar[str] = "in the platform's answer"

    url: str = Field(description="the platform's base URL, e.g. https://platform.example.cn:8443")
    timeout_s: ConfigFloat = Field(
        default=10.0,
        ge=0.01,
        le=600,
        description="each request as a whole: connecting, sending, the whole answer",
    )
    connections: Annotated[int, in_range(1, 100)] = Field(
        default=4, description="kept-alive connections"
    )
    keepalive_s: Annotated[int, in_range(1, 3600)] = Field(
        default=60,
        description="while idle, the gateway's `online` status is posted again after this: a"
        " link that died between batches is noticed within this + timeout_s",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = checked_url(
            v,
            ("https",),
            "https://",
            "https://platform.example.cn:8443",
            "use cert_file and key_file",
        )
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment: the base URL only")
        return v.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def peer(self) -> str:
        return f"platform {self.url}"

    @property
    def peer_is_local(self) -> bool:
        return is_loopback(self.host)

    def checks(self) -> tuple[Callable[[], object], ...]:
        return (self.verified_context,)

    def describe_error(self, exc: BaseException) -> str:
        """An HTTPS link error in words an operator can act on: TLS problems name the
        certificate, on whichever side it was refused."""
        return self.tls_failure(exc, self.peer, self.section) or super().describe_error(exc)

    def notes(self) -> list[str]:
        if self.cert_file is not None or self.peer_is_local:
            return []
        return [
            "cert_file and key_file are not set: the gateway presents no client certificate;"
            " a platform that requires one (mutual TLS, as a provincial platform will) refuses"
            " the connection, and tanji status says so (tanji keys https makes the key and a"
            " certificate request)"
        ]

    def transport(self, topics: Topics, client_id: str, status: StatusMessage) -> HttpsTransport:
        return HttpsTransport(self, topics, client_id, status)

    def endpoint(self, topics: Topics, kind: str) -> str:
        """Where a batch of `kind` (activity, readings) or the status is posted."""
        ids = f"{quote(topics.uscc, safe='')}/{quote(topics.gateway_id, safe='')}"
        return f"{self.url}/{self.topic_prefix}/{ids}/{kind}"


class HttpsTransport:
    """One session with an HTTPS platform: a pool of kept-alive connections (HTTP/1.1), each
    batch one request, each answer an ack for delivery to read."""

    def __init__(
        self, config: HttpsConfig, topics: Topics, client_id: str, status: StatusMessage
    ) -> None:
        self.config = config
        self.topics = topics
        self.client_id = client_id
        self._status = status
        self._client: httpx.AsyncClient | None = None
        self._answers: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._online = b""  # the session's `online` status, posted again as its keepalive
        self._answered_at = 0.0  # loop time of the platform's last answer
        # one request per connection: a request's timeout_s starts when it has one
        self._slots = asyncio.Semaphore(config.connections)

    async def __aenter__(self) -> Self:
        from gateway import __version__

        self._answers = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.config.connections)
        self._client = httpx.AsyncClient(
            verify=self.config.verified_context(),
            # each request is bounded; waiting for a free connection is bounded by those ahead
            timeout=httpx.Timeout(self.config.timeout_s, pool=None),
            limits=httpx.Limits(max_connections=self.config.connections),
            headers={"user-agent": f"tanji/{__version__} ({self.client_id})"},
            trust_env=False,  # no proxy or CA from the environment: site.toml says it all
        )
        self._online = self._status("online", None)
        try:
            await self._post_status(self._client, self._online)
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise
        log.info("connected to %s", self.config.peer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        client, self._client = self._client, None
        if client is None:
            return None
        try:
            await announce_stopped(
                exc_type, lambda: self._post_status(client, self._status("offline", "stopped"))
            )
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        return None

    async def send(self, message: Outgoing) -> None:
        headers = {"content-type": "application/json"}
        if message.compressed:
            headers["content-encoding"] = "gzip"
        if self._client is None:
            raise TransportError(f"{self.config.peer}: the session is closed")
        url = self.config.endpoint(self.topics, message.kind)
        status, body = await self._post(self._client, url, message.payload, headers)
        if status == 200:
            self._answers.put_nowait(InboundMessage(None, body))
            return
        what = f"{message.kind} batch {message.batch_id}"
        if status in PER_BATCH:  # this batch, not the link: delivery decides what follows
            raise BatchRefused(
                f"{self.config.peer} answered {status} to {what} ({PER_BATCH[status]}):"
                f" {_excerpt(body)}"
            )
        raise TransportError(f"{self.config.peer} answered {status} to {what}: {_excerpt(body)}")

    async def received(self) -> AsyncIterator[list[InboundMessage]]:
        """The answers to the sends as they arrive. While idle (no answer for keepalive_s)
        the session's `online` status is posted again: a link that died between batches
        fails here (TransportError), as an MQTT link does when its pings go unanswered."""
        answers = self._answers
        while True:
            try:
                async with asyncio.timeout_at(self._answered_at + self.config.keepalive_s):
                    received = await step(answers.get, lambda: not answers.empty())
            except TimeoutError:
                await self._keepalive()
                continue
            yield received

    async def _keepalive(self) -> None:
        if self._client is None:
            raise TransportError(f"{self.config.peer}: the session is closed")
        try:
            await self._post_status(self._client, self._online)
        except TransportError as exc:
            raise TransportError(
                f"{exc} (the keepalive, after {self.config.keepalive_s} s without traffic)"
            ) from None

    async def _post_status(self, client: httpx.AsyncClient, message: bytes) -> None:
        url = self.config.endpoint(self.topics, "status")
        headers = {"content-type": "application/json"}
        status, body = await self._post(client, url, message, headers)
        if not 200 <= status < 300:
            raise TransportError(
                f"{self.config.peer} answered {status} to the gateway's status: {_excerpt(body)}"
            )

    async def _post(
        self, client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """The answer's status and (at most MAX_RESPONSE bytes of) body, all within
        `timeout_s` (httpx's timeouts are per step: an answer trickling in a byte at a time
        would keep the request alive for days); TransportError when the link fails or is too
        slow, in words naming the certificate or host."""
        try:
            async with (
                self._slots,  # waiting for a connection is bounded by the requests ahead
                asyncio.timeout(self.config.timeout_s),
                client.stream("POST", url, content=content, headers=headers) as r,
            ):
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE:
                        break
                self._answered_at = asyncio.get_running_loop().time()
                return r.status_code, bytes(body)
        except (httpx.TimeoutException, TimeoutError) as exc:
            which = f", {type(exc).__name__}" if isinstance(exc, httpx.TimeoutException) else ""
            raise TransportError(
                f"{self.config.peer}: no complete answer within {self.config.timeout_s:g} s"
                f" ([https] timeout_s{which}): the platform or the network is too slow or"
                " stalled; the request is made again in the next session"
            ) from None
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:  # a TLS alert comes as is
            raise TransportError(self.config.describe_error(exc)) from None


def _excerpt(body: bytes) -> str:
    """The first 200 characters of an answer, on one line."""
    text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or "(no body)"

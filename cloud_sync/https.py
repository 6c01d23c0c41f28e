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
from pathlib import Path
from types import TracebackType
from typing import Annotated, ClassVar, Self
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator, model_validator

from cloud_sync.contract import Topics
from cloud_sync.transport import (
    MAX_PER_STEP,
    BatchRefused,
    InboundMessage,
    LinkConfig,
    Outgoing,
    StatusMessage,
    TransportError,
    is_loopback,
)
from gateway.models import ConfigFloat, in_range

log = logging.getLogger(__name__)

MAX_RESPONSE = 64 * 1024  # read no more of an answer (an ack is at most 16 KiB)
STOP_ANNOUNCE_S = 2.0
# answers refusing one batch, not the link (BatchRefused)
PER_BATCH = {400: "the platform could not read it", 413: "it is too large for the platform"}


class HttpsConfig(LinkConfig):
    """`[https]`: how to reach a platform that takes HTTPS, and who this gateway is to it."""

    section: ClassVar[str] = "https"
    ack_channel: ClassVar[str] = "in the platform's answer"

    url: str = Field(description="the platform's base URL, e.g. https://platform.example.cn:8443")
    ca_file: Path | None = Field(
        default=None, description="CA certificate(s) that sign the platform's; default: system"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="the client certificate's key")
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
        parts = urlsplit(v)
        if parts.scheme != "https":
            raise ValueError(f"scheme must be https:// (got {parts.scheme or 'none'!r})")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. https://platform.example.cn:8443")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("port must be 1..65535") from None
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL: use cert_file and key_file")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment: the base URL only")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> HttpsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        return self

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
        return (self.tls_context,)

    def transport(self, topics: Topics, client_id: str, status: StatusMessage) -> HttpsTransport:
        return HttpsTransport(self, topics, client_id, status)

    def endpoint(self, topics: Topics, kind: str) -> str:
        """Where a batch of `kind` (activity, readings) or the status is posted."""
        ids = f"{quote(topics.uscc, safe='')}/{quote(topics.gateway_id, safe='')}"
        return f"{self.url}/{self.topic_prefix}/{ids}/{kind}"

    def tls_context(self) -> ssl.SSLContext:
        """TLS 1.2 or newer, the platform verified; TransportError naming the field and file
        that cannot be read."""
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is not None:
                try:
                    path.open("rb").close()
                except OSError as exc:
                    raise TransportError(f"{name} {path}: {exc.strerror or exc}") from None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"ca_file {self.ca_file}: {_reason(exc)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(
                    f"cert_file {self.cert_file} / key_file {self.key_file}: {_reason(exc)}"
                ) from None
        return ctx


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
            verify=self.config.tls_context(),
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
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                with contextlib.suppress(TransportError, TimeoutError):  # best effort
                    await asyncio.wait_for(
                        self._post_status(client, self._status("offline", "stopped")),
                        STOP_ANNOUNCE_S,
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
        while True:
            try:
                async with asyncio.timeout_at(self._answered_at + self.config.keepalive_s):
                    first = await self._answers.get()
            except TimeoutError:
                await self._keepalive()
                continue
            step = [first]
            while not self._answers.empty() and len(step) < MAX_PER_STEP:
                step.append(self._answers.get_nowait())
            yield step

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
            step = f", {type(exc).__name__}" if isinstance(exc, httpx.TimeoutException) else ""
            raise TransportError(
                f"{self.config.peer}: no complete answer within {self.config.timeout_s:g} s"
                f" ([https] timeout_s{step}): the platform or the network is too slow or"
                " stalled; the request is made again in the next session"
            ) from None
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:  # a TLS alert comes as is
            raise TransportError(describe_error(exc, self.config)) from None


def describe_error(exc: BaseException, config: HttpsConfig) -> str:
    """An HTTPS link error in words an operator can act on: TLS problems name the
    certificate, on whichever side it was refused."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        where = f"against {config.ca_file}" if config.ca_file else "against the system CAs"
        return (
            f"TLS: the platform's certificate ({config.url}) failed verification {where}:"
            f" {cause.verify_message}"
        )
    if isinstance(cause, ssl.SSLError):
        reason = str(cause.reason or cause)
        if "ALERT" in reason and any(a in reason for a in REFUSED_CERTIFICATE):
            mine = (
                f"this gateway's client certificate {config.cert_file}"
                if config.cert_file
                else "this gateway: no client certificate is configured (https.cert_file)"
            )
            return f"TLS: {config.url} refused {mine} ({reason})"
        return f"TLS handshake with {config.url} failed: {reason}"
    return f"{config.peer}: {type(exc).__name__}: {exc}"


# TLS alerts by which a server refuses the client's certificate (TLSV13_ALERT_CERTIFICATE_
# REQUIRED, TLSV1_ALERT_UNKNOWN_CA, SSLV3_ALERT_CERTIFICATE_EXPIRED, ...)
REFUSED_CERTIFICATE = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def _excerpt(body: bytes) -> str:
    """The first 200 characters of an answer, on one line."""
    text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or "(no body)"

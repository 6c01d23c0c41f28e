"""The platform simulator's HTTPS binding: the same batches and acks as over MQTT, as JSON over
HTTP/1.1 with mutual TLS (docs/platform-contract.md, "HTTPS binding").

`POST /{prefix}/{uscc}/{gateway_id}/activity` (or `.../readings`: the MQTT topic as the path)
carries a batch, its JSON text or that text gzip-compressed; the answer is the signed ack the
MQTT binding would publish, from the same `PlatformDesk`: the same validation, idempotence and
refusals. A client without a certificate signed by the client CA never reaches HTTP. The
status code never carries a verdict (a proxy can change it, not the ack's signature).

TLS through memory BIOs (simulators/tls_stream.py: a refused client hears the alert) and h11
(HTTP/1.1 parsing without I/O, which httpx builds on too) rather than a web framework: one
endpoint needs no routing or middleware, and every limit (head, body, idle time) is stated
here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import h11

from cloud_sync import ContractError, load_json, validate
from gateway.errors import TanjiError
from simulators.platform import PlatformDesk
from simulators.platform_store import MAX_PAYLOAD
from simulators.tls_stream import TlsStream

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line and headers
MAX_BODY = MAX_PAYLOAD  # a batch as sent; inflated it is checked against MAX_PAYLOAD again
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0  # a kept-alive connection without a request is closed after this
BODY_TIMEOUT_S = 30.0  # between two pieces of a request
ENCODINGS = ("", "identity", "gzip")  # the body is told apart by gzip's magic bytes anyway


class HttpsSetupError(TanjiError):
    """The listener cannot be set up as given (a certificate, key or CA file)."""


@dataclass(frozen=True)
class HttpsSettings:
    """Where the listener binds and the files of its mutual TLS: its own certificate and key,
    and the CA that signs the certificates of the gateways it takes."""

    cert_file: Path
    key_file: Path
    client_ca: Path
    host: str = "127.0.0.1"
    port: int = 8443  # 0: a free port, told by `PlatformHttps.port` once listening
    prefix: str = "tanji/v1"

    def tls_context(self) -> ssl.SSLContext:
        """TLS 1.2 or newer, a client certificate required; HttpsSetupError naming the file."""
        for what, path in (
            ("client CA", self.client_ca),
            ("server certificate", self.cert_file),
            ("server key", self.key_file),
        ):
            try:
                path.open("rb").close()
            except OSError as exc:
                raise HttpsSetupError(f"{what} {path}: {_why(exc)}") from None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise HttpsSetupError(f"client CA {self.client_ca}: {_why(exc)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise HttpsSetupError(
                f"server certificate {self.cert_file} / key {self.key_file}: {_why(exc)}"
            ) from None
        return ctx


@dataclass
class HttpsCounters:
    connections: int = 0
    requests: int = 0
    tls_refused: int = 0  # handshakes that failed: no, or no valid, client certificate
    last_tls_refusal: str | None = None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    close: bool = False

    @classmethod
    def error(cls, status: int, text: str, close: bool = False) -> Reply:
        return cls(status, json.dumps({"error": text}).encode(), close)


class PlatformHttps:
    """The HTTPS listener of a platform simulator, answering through `desk` (shared with its
    MQTT receiver, if any); `run()` until cancelled."""

    def __init__(self, desk: PlatformDesk, settings: HttpsSettings) -> None:
        self.desk = desk
        self.settings = settings
        self.counters = HttpsCounters()
        self.port: int | None = None  # once listening
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}  # each gateway's last status
        self._tls = settings.tls_context()
        self._path = re.compile(
            rf"/{re.escape(settings.prefix)}/([^/]+)/([^/]+)/(activity|readings|status)"
        )

    @property
    def base_url(self) -> str:
        """What a gateway's `[https] url` is to be: scheme, host and port, no path (the
        gateway adds its `topic_prefix`)."""
        host = self.settings.host
        return f"https://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def url(self) -> str:
        """Where the endpoints lie: `base_url` and the prefix (`{url}/{uscc}/{gateway_id}/
        activity`); not for `[https] url`, which would then repeat the prefix (a 404)."""
        return f"{self.base_url}/{self.settings.prefix}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Listen until cancelled; `ready` is set once `port` is known."""
        server = await self.listen()
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    async def listen(self) -> asyncio.Server:
        """Bind the listening socket (HttpsSetupError when it cannot: the port in use, ...);
        `serve_forever()` on the server it returns serves."""
        try:
            server = await asyncio.start_server(
                self._connection, self.settings.host, self.settings.port, reuse_address=True
            )
        except OSError as exc:
            where = f"{self.settings.host}:{self.settings.port}"
            raise HttpsSetupError(f"HTTPS listener {where}: {_why(exc)}") from None
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("platform: HTTPS on %s", self.url)
        return server

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.counters.connections += 1
        stream = TlsStream(reader, writer, self._tls)
        try:
            try:
                await stream.handshake(HANDSHAKE_TIMEOUT_S)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                self.counters.tls_refused += 1
                self.counters.last_tls_refusal = f"{peer}: {_why(exc)}"
                log.warning(
                    "platform: HTTPS client %s refused in the TLS handshake: %s", peer, _why(exc)
                )
                await stream.linger()  # the client reads the alert
                return
            unread = await self._serve(stream)
            await stream.close()
            if unread:  # answered before the body was read: let the client finish sending
                await stream.linger()  # and read the answer (a close now would reset it)
        except (OSError, TimeoutError, ssl.SSLError, h11.LocalProtocolError) as exc:
            log.debug("platform: HTTPS connection from %s ended: %r", peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, stream: TlsStream) -> bool:
        """Requests one after the other on a kept-alive connection, until one is answered
        with a close; True when that answer came before the client had sent all of its
        request (a refusal by its head: 404, 405, 413, 415)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                request = await _next_event(conn, stream, IDLE_TIMEOUT_S)
                if not isinstance(request, h11.Request):
                    return False  # the client closed the connection
                self.counters.requests += 1
                reply = await self._reply(conn, stream, request)
            except h11.RemoteProtocolError as exc:
                reply = Reply.error(exc.error_status_hint, f"bad request: {exc}", close=True)
            if conn.our_state is not h11.SEND_RESPONSE:
                return False
            await stream.write(_response(conn, reply))
            if not _cycle_done(conn):
                return conn.their_state is h11.SEND_BODY
            conn.start_next_cycle()

    async def _reply(self, conn: h11.Connection, stream: TlsStream, request: h11.Request) -> Reply:
        target = request.target.decode("ascii", "replace").split("?", 1)[0]
        found = self._path.fullmatch(target)
        if found is None:
            where = (
                f"/{self.settings.prefix}/{{uscc}}/{{gateway_id}}/activity (or /readings, /status)"
            )
            return Reply.error(404, f"no such endpoint: POST {where}", close=True)
        if request.method != b"POST":
            return Reply.error(405, "only POST", close=True)
        headers = {k.lower(): v for k, v in request.headers}
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding not in ENCODINGS:
            return Reply.error(415, f"content-encoding {encoding!r}: gzip or none", close=True)
        length = headers.get(b"content-length")
        if length is not None and int(length) > MAX_BODY:
            return Reply.error(413, f"a batch is at most {MAX_BODY} bytes", close=True)
        body = await _body(conn, stream)
        if body is None:
            return Reply.error(413, f"a batch is at most {MAX_BODY} bytes", close=True)
        uscc, gateway_id, kind = (unquote(g) for g in found.groups())
        if kind == "status":
            return self._status(uscc, gateway_id, body)
        try:
            ack = await self.desk.answer_one(
                f"{self.settings.prefix}/{uscc}/{gateway_id}/{kind}", body
            )
        except Exception as exc:  # the database: not the batch's fault, send it again
            return Reply.error(503, f"the platform cannot store batches now: {exc}")
        if ack is None:
            return Reply.error(400, "not a batch for this address: no ack can name it")
        return Reply(200, ack)

    def _status(self, uscc: str, gateway_id: str, body: bytes) -> Reply:
        """A gateway's `tanji.status/1` (online when its session starts, offline when it
        stops): kept as its last state, as the retained MQTT message is."""
        try:
            message = load_json(body, "status")
            validate("status.v1.json", message)
        except ContractError as exc:
            return Reply.error(400, f"not a status message: {exc}")
        if (message["uscc"], message["gateway_id"]) != (uscc, gateway_id):
            return Reply.error(400, "the status names another gateway than the path")
        self.statuses[uscc, gateway_id] = message
        log.info("platform: %s/%s is %s", uscc, gateway_id, message["state"])
        return Reply(204, b"")


async def _next_event(
    conn: h11.Connection, stream: TlsStream, timeout_s: float
) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return cast("h11.Event | type[h11.PAUSED]", event)
        conn.receive_data(await asyncio.wait_for(stream.read(), timeout_s))


async def _body(conn: h11.Connection, stream: TlsStream) -> bytes | None:
    """The request's body, or None when it grows beyond MAX_BODY (then not read further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream, BODY_TIMEOUT_S)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise ConnectionResetError("the client went away within a request")


def _cycle_done(conn: h11.Connection) -> bool:
    """Both sides finished their message: the connection may carry the next request."""
    return conn.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}


def _response(conn: h11.Connection, reply: Reply) -> bytes:
    headers = [("server", "tanji-platform-sim")]
    if reply.status != 204:  # No Content: no body, no framing
        headers += [("content-type", "application/json"), ("content-length", str(len(reply.body)))]
    if reply.close:
        headers.append(("connection", "close"))
    head = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
    return (
        head
        + (conn.send(h11.Data(data=reply.body)) or b"")
        + (conn.send(h11.EndOfMessage()) or b"")
    )


def _why(exc: BaseException) -> str:
    """A TLS or file error in words: the certificate check's own message where there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc) or type(exc).__name__

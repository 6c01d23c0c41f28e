"""A TCP proxy on loopback that can cut a connection in the middle of a message or swallow
traffic without closing (a dead link that TCP does not notice), for network fault tests."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`, one thread per direction."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut_after: int | None = None  # client->server bytes still forwarded, then cut
        self.blackhole = False  # swallow everything, both ways, keep the sockets open
        self.connections = 0
        self.cuts = 0
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, n: int) -> None:
        """Forward `n` more bytes towards the server, then drop the connection (both ends)."""
        with self._lock:
            self._cut_after = n

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._open:
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if self.blackhole:
                    continue
                if upstream:
                    with self._lock:
                        cut, self._cut_after = self._cut_after, None
                        if cut is not None and cut >= len(data):
                            self._cut_after = cut - len(data)
                            cut = None
                    if cut is not None:
                        dst.sendall(data[:cut])
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

"""A TCP proxy a test controls, to put network faults between Khoa and its database.

Modes (:meth:`TcpProxy.set_mode`):

- ``pass``: bytes go through both ways.
- ``blackhole``: connections (open and new) are accepted and read, but nothing is forwarded or answered,
  as when a route or a middlebox goes silent. A connection that lived through a blackhole never
  forwards again (bytes were lost in the middle of its stream); clients must open new ones.
- ``reset``: every open connection is reset (RST), and so is every new one as soon as it is accepted.
- ``refuse``: the proxy stops listening (connection refused) and resets the open connections, as when
  the database's host is up but the database is not.
- ``slow``: each chunk is forwarded after ``delay`` seconds.

Everything runs on daemon threads of the proxy's own; :meth:`close` stops them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "blackhole", "reset", "refuse", "slow")


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST rather than a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Link:
    client: socket.socket
    upstream: socket.socket | None
    black: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self, *, reset: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class TcpProxy:
    """Listens on 127.0.0.1:``port`` (a free one by default) and forwards to ``target``."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self.port = port
        self._listen()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcpproxy-accept", daemon=True)
        self._acceptor.start()

    # -- control ---------------------------------------------------------------------------------

    def set_mode(self, mode: str, delay: float = 0.0) -> None:
        """Switch to ``mode`` (see the module docstring); ``delay`` is for ``slow``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self.mode = mode
            self.delay = delay
            links = list(self._links) if mode in ("reset", "refuse") else []
            if mode == "refuse" and self._listener is not None:
                self._listener.close()
                self._listener = None
            elif mode != "refuse" and self._listener is None:
                self._listen()
        for link in links:
            link.close(reset=True)

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            links = list(self._links)
        for link in links:
            link.close()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            self._start(client)

    def _start(self, client: socket.socket) -> None:
        mode = self.mode
        if mode in ("reset", "refuse"):
            _reset(client)
            return
        upstream = None
        if mode != "blackhole":
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                return
        link = _Link(client, upstream, black=mode == "blackhole")
        with self._lock:
            self._links = [existing for existing in self._links if not existing.closed]
            self._links.append(link)
        threading.Thread(target=self._pump, args=(link, client, upstream), daemon=True).start()
        if upstream is not None:
            threading.Thread(target=self._pump, args=(link, upstream, client), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, destination: socket.socket | None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                mode, delay = self.mode, self.delay
                if mode == "blackhole":
                    link.black = True
                if link.black or destination is None:
                    continue  # read and dropped: nothing is forwarded, nothing answered
                if mode == "slow" and delay > 0:
                    time.sleep(delay)
                destination.sendall(data)
        except OSError:
            pass
        link.close()

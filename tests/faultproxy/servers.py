"""Servers and socket helpers for the fault proxy tests, all on 127.0.0.1.

The servers run in threads, so the tests stay synchronous. Every blocking call has a timeout
and every loop ends, so a broken proxy fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlparse

from metallica.listeners import PortReservation

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0
"""The longest any socket call in these tests may block."""


def pattern(size: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same size (so order errors show)."""
    return random.Random(size).randbytes(size)


# --- a threaded TCP server ---------------------------------------------------------------------


Handler = Callable[[socket.socket, "TcpServer"], None]


class TcpServer:
    """A TCP server on 127.0.0.1, one thread per connection running ``handler``.

    ``received`` counts the bytes every connection read, so a test can see what reached it.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._received = 0
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-tcp-accept")

    @property
    def received(self) -> int:
        with self._lock:
            return self._received

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def count(self, size: int) -> None:
        with self._lock:
            self._received += size

    def wait_received(self, size: int, timeout: float = IO_TIMEOUT) -> int:
        """Wait until ``size`` bytes arrived (or ``timeout``); return how many did."""
        deadline = time.monotonic() + timeout
        while self.received < size and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._acceptor.join(IO_TIMEOUT)
        self._listener.close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        for thread in threads:
            thread.join(IO_TIMEOUT)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(IO_TIMEOUT)
            thread = threading.Thread(target=self._serve, args=(connection,), name="test-tcp")
            with self._lock:
                self._connections.append(connection)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            self._handler(connection, self)


def echo(connection: socket.socket, server: TcpServer) -> None:
    """Send back everything, until EOF."""
    while data := connection.recv(65536):
        server.count(len(data))
        connection.sendall(data)


def sink(connection: socket.socket, server: TcpServer) -> None:
    """Read everything, answer nothing."""
    while data := connection.recv(65536):
        server.count(len(data))


def blob(connection: socket.socket, server: TcpServer) -> None:
    """Read a line with a number ``n``, send ``pattern(n)``, then wait for the client to go."""
    line = b""
    while not line.endswith(b"\n"):
        data = connection.recv(1)
        if not data:
            return
        server.count(1)
        line += data
    connection.sendall(pattern(int(line)))
    while connection.recv(65536):
        pass


def count_then_reply(connection: socket.socket, server: TcpServer) -> None:
    """Read until EOF, then answer how many bytes came (needs a working half-close)."""
    total = 0
    while data := connection.recv(65536):
        total += len(data)
    server.count(total)
    connection.sendall(str(total).encode())


# --- a tiny HTTP/1.1 server --------------------------------------------------------------------


class _HttpHandler(BaseHTTPRequestHandler):
    """``/hello``; ``/big?size=n`` (n bytes of pattern); ``/slow?ms=n`` (answers after n ms)."""

    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IO_TIMEOUT

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {key: int(values[0]) for key, values in parse_qs(url.query).items()}
        if url.path == "/hello":
            body = b"hello"
        elif url.path == "/big":
            body = pattern(query.get("size", 100_000))
        elif url.path == "/slow":
            time.sleep(query.get("ms", 500) / 1000)
            body = b"slow"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _QuietHttpServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Connections cut by toxics are what these tests are about: no tracebacks."""


class HttpServer:
    """A threaded HTTP/1.1 server with keep-alive, on 127.0.0.1."""

    def __init__(self) -> None:
        self._server = _QuietHttpServer((HOST, 0), _HttpHandler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http"
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._thread.join(IO_TIMEOUT)
        self._server.server_close()


# --- client side -------------------------------------------------------------------------------


def connect(port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A client socket connected to 127.0.0.1:``port``."""
    return socket.create_connection((HOST, port), timeout=timeout)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (fails on EOF first)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        data = sock.recv(min(remaining, 1 << 20))
        if not data:
            raise AssertionError(f"EOF after {size - remaining} of {size} bytes")
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` (from a second thread) while reading as many bytes back."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    sender = threading.Thread(target=send, name="test-sender")
    sender.start()
    try:
        return recv_exactly(sock, len(payload))
    finally:
        sender.join(IO_TIMEOUT)
        if errors:
            raise errors[0]


def read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """Read until the connection ends: the data, and ``"eof"`` or ``"reset"``."""
    parts: list[bytes] = []
    reads = 0
    while reads < 100_000:
        reads += 1
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(parts), "reset"
        if not data:
            return b"".join(parts), "eof"
        parts.append(data)
    raise AssertionError("the connection did not end")


def reads_to_end(sock: socket.socket) -> list[bytes]:
    """Every ``recv`` result until EOF, to see how the data was cut up."""
    reads: list[bytes] = []
    while len(reads) < 100_000:
        data = sock.recv(65536)
        if not data:
            return reads
        reads.append(data)
    raise AssertionError("the connection did not end")


def refused_port() -> PortReservation:
    """A port on 127.0.0.1 that refuses connections for as long as the reservation is open
    (reserved, never listened on: no other process can start listening there meanwhile)."""
    return PortReservation(HOST)

"""Ports that no other process can take: reserve one, then hand listening sockets to children.

Picking a free port and letting a child bind it later is a race: another process (a parallel
test worker, say) can bind it in between. Instead a parent *reserves* the port: it binds a
socket and never listens on it, so the port is taken for everyone else, while a connection to
it is refused, as to a stopped service. Each time a child starts, the parent binds a second,
listening socket to the same port (both sockets set ``SO_REUSEPORT``, which only sockets of
this user that also set it can share) and hands it over, already bound, as an inherited file
descriptor (``metallica serve --fd``). When the child dies its socket goes with it: the port
refuses connections again, and stays ours for the next start.

A port asked for by number is first probed with a plain bind, so it is refused when anyone
holds it, another reservation included (``SO_REUSEPORT`` alone would let two share it); port 0
needs no probe: the kernel never hands out a port in use.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self

from metallica.errors import MetallicaError


class PortUnavailable(MetallicaError):
    """The port is taken by another process."""

    code = "port-unavailable"


def _bound(host: str, port: int, *, reuse_address: bool, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: bind past connections of an earlier listener still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortUnavailable(f"cannot use {host}:{port}: {error.strerror or error}") from None
    return sock


class PortReservation:
    """``host:port`` held by this process for as long as the reservation is open; port 0
    reserves a free one (read it from :attr:`port`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        if port != 0:
            _bound(host, port, reuse_address=True, reuse_port=False).close()
        # Without SO_REUSEADDR: a server that sets only that (uvicorn does) cannot bind here.
        self._holder = _bound(host, port, reuse_address=False, reuse_port=True)
        self.port: int = self._holder.getsockname()[1]

    def listener(self, backlog: int = 2048) -> socket.socket:
        """A new socket listening on the reserved port, inheritable by a child process (pass
        its ``fileno()`` in ``pass_fds``; close this copy once the child has started)."""
        sock = _bound(self.host, self.port, reuse_address=True, reuse_port=True)
        sock.listen(backlog)
        sock.set_inheritable(True)
        return sock

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket a parent handed down as file descriptor ``fd``."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        raise PortUnavailable(f"file descriptor {fd} is not a stream socket")
    return sock

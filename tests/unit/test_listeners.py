"""Reserved ports: taken for everyone else, refusing connections until a listener is handed out."""

from __future__ import annotations

import socket

import pytest

from metallica.listeners import PortReservation, PortUnavailable


def connects(port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(2)
        try:
            client.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return False
        return True


def uvicorn_like_bind(port: int) -> None:
    """Bind as uvicorn does (SO_REUSEADDR), and listen."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()


def test_a_reserved_port_refuses_connections_and_nobody_else_can_listen_on_it() -> None:
    with PortReservation() as reserved:
        assert reserved.port > 0
        assert not connects(reserved.port)
        with pytest.raises(OSError, match="in use"):
            uvicorn_like_bind(reserved.port)
        with pytest.raises(PortUnavailable, match=str(reserved.port)):
            PortReservation(port=reserved.port)  # not even another reservation


def test_listeners_come_and_go_on_the_reserved_port() -> None:
    with PortReservation() as reserved:
        for _ in range(3):  # a child starts, dies, starts again
            listener = reserved.listener()
            assert listener.get_inheritable()
            assert connects(reserved.port)
            listener.close()
            assert not connects(reserved.port)


def test_a_port_that_is_taken_cannot_be_reserved() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(PortUnavailable, match="in use"):
            PortReservation(port=server.getsockname()[1])


def test_free_ports_are_never_handed_out_twice() -> None:
    reservations = [PortReservation() for _ in range(200)]
    try:
        assert len({reservation.port for reservation in reservations}) == 200
    finally:
        for reservation in reservations:
            reservation.close()

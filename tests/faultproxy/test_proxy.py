"""The proxy at the socket level: pass-through, each toxic, toxics on open connections, errors."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from metallica.faultproxy import (
    Bandwidth,
    Down,
    Latency,
    LimitData,
    ListenFailed,
    ProxyExists,
    ProxyThread,
    ResetPeer,
    Slicer,
    Timeout,
    ToxicExists,
    UnknownProxy,
    UnknownToxic,
)
from metallica.faultproxy.toxics import Direction
from tests.faultproxy import servers
from tests.faultproxy.servers import connect, exchange, pattern, read_to_end, recv_exactly


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds for ``payload`` to come back through the echo server."""
    started = time.perf_counter()
    assert exchange(sock, payload) == payload
    return time.perf_counter() - started


def ask_blob(port: int, size: int) -> socket.socket:
    """A connection to the blob server that asked it for ``size`` bytes."""
    sock = connect(port)
    sock.sendall(b"%d\n" % size)
    return sock


@pytest.fixture
def echo_port(proxies: ProxyThread, echo: servers.TcpServer) -> int:
    return proxies.add_proxy("echo", "127.0.0.1", echo.port)


@pytest.fixture
def blob_port(proxies: ProxyThread, blob: servers.TcpServer) -> int:
    return proxies.add_proxy("blob", "127.0.0.1", blob.port)


# --- no toxics -----------------------------------------------------------------------------------


def test_a_large_payload_passes_both_ways_intact(proxies: ProxyThread, echo_port: int) -> None:
    payload = pattern(4 * 1024 * 1024)
    with connect(echo_port) as sock:
        assert exchange(sock, payload) == payload
    stats = proxies.stats("echo")
    assert stats.connections_accepted == 1
    assert stats.bytes_upstream == stats.bytes_downstream == len(payload)


def test_a_half_close_is_forwarded_and_the_other_way_keeps_working(proxies: ProxyThread) -> None:
    with servers.TcpServer(servers.count_then_reply) as counter:
        port = proxies.add_proxy("counter", "127.0.0.1", counter.port)
        with connect(port) as sock:
            sock.sendall(pattern(1_000_000))
            sock.shutdown(socket.SHUT_WR)  # the server answers only after our EOF
            assert read_to_end(sock) == (b"1000000", "eof")


def test_an_unreachable_upstream_closes_the_client_connection(proxies: ProxyThread) -> None:
    with servers.refused_port() as nowhere:
        port = proxies.add_proxy("nowhere", "127.0.0.1", nowhere.port)
        with connect(port) as sock:
            data, how = read_to_end(sock)
    assert data == b""
    assert how in ("eof", "reset")


def test_stopping_a_proxy_closes_its_connections_and_port(
    proxies: ProxyThread, echo_port: int
) -> None:
    socks = [connect(echo_port) for _ in range(3)]
    try:
        for sock in socks:
            round_trip(sock)
        proxies.remove_proxy("echo")
        for sock in socks:
            assert read_to_end(sock)[0] == b""
    finally:
        for sock in socks:
            sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(echo_port).close()


# --- latency -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "expected"), [("downstream", 0.2), ("upstream", 0.2), ("both", 0.4)]
)
def test_latency_delays_the_data(
    proxies: ProxyThread, echo_port: int, direction: Direction, expected: float
) -> None:
    with connect(echo_port) as sock:
        round_trip(sock)
        proxies.add_toxic("echo", Latency(latency_ms=200, direction=direction))
        assert expected <= round_trip(sock) < expected + 1.0


def test_latency_shifts_a_stream_instead_of_delaying_every_chunk(
    proxies: ProxyThread, echo_port: int
) -> None:
    proxies.add_toxic("echo", Latency(latency_ms=150, direction="both"))
    payload = pattern(2 * 1024 * 1024)  # dozens of chunks: one delay each would be seconds
    with connect(echo_port) as sock:
        assert 0.3 <= round_trip(sock, payload) < 1.5


def test_latency_with_jitter_keeps_the_order(proxies: ProxyThread, echo_port: int) -> None:
    proxies.add_toxic("echo", Latency(latency_ms=20, jitter_ms=20))
    messages = [b"<%03d>" % i for i in range(40)]
    with connect(echo_port) as sock:
        for message in messages:
            sock.sendall(message)
            time.sleep(0.002)  # separate chunks, each with its own jitter
        assert recv_exactly(sock, 5 * len(messages)) == b"".join(messages)


def test_removing_latency_releases_data_already_held(proxies: ProxyThread, echo_port: int) -> None:
    proxies.add_toxic("echo", Latency(latency_ms=10_000))
    with connect(echo_port) as sock:
        sock.sendall(b"held")
        time.sleep(0.2)
        started = time.perf_counter()
        proxies.remove_toxic("echo", "latency")
        assert recv_exactly(sock, 4) == b"held"
        assert time.perf_counter() - started < 1.0


# --- down ----------------------------------------------------------------------------------------


def test_down_refuses_and_closes_then_comes_back_on_the_same_port(
    proxies: ProxyThread, echo_port: int
) -> None:
    with connect(echo_port) as sock:
        round_trip(sock)
        proxies.add_toxic("echo", Down())
        assert read_to_end(sock)[0] == b""  # closed under the client
    with pytest.raises(ConnectionRefusedError):
        connect(echo_port).close()
    assert proxies.port("echo") == echo_port

    proxies.remove_toxic("echo", "down")
    with connect(echo_port) as sock:
        assert round_trip(sock) < 0.5


# --- timeout -------------------------------------------------------------------------------------


def test_timeout_blackholes_until_removed(
    proxies: ProxyThread, echo_port: int, echo: servers.TcpServer
) -> None:
    proxies.add_toxic("echo", Timeout())
    with connect(echo_port, timeout=0.3) as sock:
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert echo.received == 0  # nothing was forwarded upstream either

        proxies.remove_toxic("echo", "timeout")
        sock.settimeout(servers.IO_TIMEOUT)
        round_trip(sock, b"found")  # the same connection works again; "lost" stays lost
    assert echo.received == len(b"found")


def test_timeout_upstream_forwards_nothing(proxies: ProxyThread, sink: servers.TcpServer) -> None:
    port = proxies.add_proxy("sink", "127.0.0.1", sink.port)
    proxies.add_toxic("sink", Timeout(direction="upstream"))
    with connect(port) as sock:
        sock.sendall(b"x" * 1000)
        time.sleep(0.3)
        assert sink.received == 0


def test_timeout_downstream_answers_nothing(
    proxies: ProxyThread, echo_port: int, echo: servers.TcpServer
) -> None:
    proxies.add_toxic("echo", Timeout(direction="downstream"))
    with connect(echo_port, timeout=0.3) as sock:
        sock.sendall(b"x" * 1000)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    assert echo.wait_received(1000) == 1000  # the request got through, the answer did not


def test_timeout_closes_the_connection_after_timeout_ms(
    proxies: ProxyThread, echo_port: int
) -> None:
    proxies.add_toxic("echo", Timeout(timeout_ms=300))
    started = time.perf_counter()  # before connecting: the clock starts when the proxy accepts
    with connect(echo_port) as sock:
        sock.sendall(b"ping")
        assert read_to_end(sock) == (b"", "eof")
        assert 0.3 <= time.perf_counter() - started < 2.0


# --- reset_peer ----------------------------------------------------------------------------------


def test_reset_peer_resets_new_connections(proxies: ProxyThread, echo_port: int) -> None:
    proxies.add_toxic("echo", ResetPeer())

    def ping() -> bytes:
        with connect(echo_port) as sock:
            sock.sendall(b"ping")
            return sock.recv(100)

    # The reset may even beat connect() back to the client: that is a reset too.
    with pytest.raises(ConnectionResetError):
        ping()


def test_reset_peer_resets_an_open_connection_after_timeout_ms(
    proxies: ProxyThread, echo_port: int
) -> None:
    with connect(echo_port) as sock:
        round_trip(sock)
        started = time.perf_counter()  # the clock starts before add_toxic returns
        proxies.add_toxic("echo", ResetPeer(timeout_ms=300))
        round_trip(sock)  # data still flows until the reset
        assert read_to_end(sock) == (b"", "reset")
        assert 0.3 <= time.perf_counter() - started < 2.0


# --- limit_data ----------------------------------------------------------------------------------


def test_limit_data_cuts_after_exactly_n_bytes(proxies: ProxyThread, blob_port: int) -> None:
    proxies.add_toxic("blob", LimitData(bytes=10_000))
    with ask_blob(blob_port, 100_000) as sock:
        assert read_to_end(sock) == (pattern(100_000)[:10_000], "eof")
    with ask_blob(blob_port, 5_000) as sock:  # counted per connection: this one fits
        assert recv_exactly(sock, 5_000) == pattern(5_000)


def test_limit_data_upstream_forwards_exactly_n_bytes(
    proxies: ProxyThread, sink: servers.TcpServer
) -> None:
    port = proxies.add_proxy("sink", "127.0.0.1", sink.port)
    proxies.add_toxic("sink", LimitData(bytes=1000, direction="upstream"))
    with connect(port) as sock:
        sock.sendall(b"x" * 700)
        sock.sendall(b"y" * 700)
        assert read_to_end(sock)[0] == b""
    assert sink.wait_received(1000) == 1000
    time.sleep(0.1)
    assert sink.received == 1000


def test_limit_data_counts_what_comes_out_of_earlier_toxics(
    proxies: ProxyThread, blob_port: int
) -> None:
    proxies.add_toxic("blob", Slicer(average_size=700, size_variation=300))
    proxies.add_toxic("blob", LimitData(bytes=5_000))
    with ask_blob(blob_port, 20_000) as sock:
        assert read_to_end(sock) == (pattern(20_000)[:5_000], "eof")


# --- slicer and bandwidth ------------------------------------------------------------------------


def test_slicer_delivers_everything_in_many_small_reads(
    proxies: ProxyThread, blob_port: int
) -> None:
    proxies.add_toxic("blob", Slicer(average_size=100, size_variation=50, delay_us=500))
    with ask_blob(blob_port, 20_000) as sock:
        reads: list[bytes] = []
        while sum(map(len, reads)) < 20_000 and len(reads) < 100_000:
            reads.append(sock.recv(65536))
            assert reads[-1], "EOF before the end of the data"
    assert b"".join(reads) == pattern(20_000)
    assert len(reads) >= 20


def test_bandwidth_limits_throughput(proxies: ProxyThread, blob_port: int) -> None:
    proxies.add_toxic("blob", Bandwidth(rate_kb_per_s=200))
    started = time.perf_counter()
    with ask_blob(blob_port, 100_000) as sock:
        assert recv_exactly(sock, 100_000) == pattern(100_000)
    elapsed = time.perf_counter() - started
    assert 100_000 / 200_000 <= elapsed < 3.0


# --- toxics on open connections, toxicity --------------------------------------------------------


def test_toxics_take_effect_on_an_open_keep_alive_connection(
    proxies: ProxyThread, echo_port: int
) -> None:
    with connect(echo_port) as sock:
        round_trip(sock)

        proxies.add_toxic("echo", Latency(latency_ms=300))
        assert round_trip(sock) >= 0.3
        proxies.remove_toxic("echo", "latency")
        assert round_trip(sock) < 0.2

        proxies.add_toxic("echo", Timeout())
        sock.settimeout(0.3)
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        proxies.clear("echo")
        sock.settimeout(servers.IO_TIMEOUT)
        assert round_trip(sock) < 0.2

        proxies.add_toxic("echo", ResetPeer())
        assert read_to_end(sock) == (b"", "reset")
    assert proxies.stats("echo").connections_accepted == 1


def test_toxicity_picks_the_share_of_connections_affected(
    proxies: ProxyThread, echo_port: int
) -> None:
    proxies.add_toxic("echo", Latency(name="never", latency_ms=1000, toxicity=0.0))
    with connect(echo_port) as sock:
        assert round_trip(sock) < 0.5
    proxies.clear("echo")

    proxies.add_toxic("echo", Latency(latency_ms=100, toxicity=0.5))
    slow = 0
    for _ in range(16):
        with connect(echo_port) as sock:
            slow += round_trip(sock) >= 0.1
    assert 1 <= slow <= 15


def test_concurrent_connections_are_independent(proxies: ProxyThread, echo_port: int) -> None:
    proxies.add_toxic("echo", LimitData(bytes=50_000, direction="upstream"))
    results: list[bool] = []

    def client(index: int) -> None:
        payload = pattern(20_000 + index)
        with connect(echo_port) as sock:
            results.append(exchange(sock, payload) == payload)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(servers.IO_TIMEOUT)
    assert results == [True] * 8


# --- errors --------------------------------------------------------------------------------------


def test_errors_name_what_is_wrong(
    proxies: ProxyThread, echo_port: int, echo: servers.TcpServer
) -> None:
    proxies.add_toxic("echo", Latency(latency_ms=1))
    with pytest.raises(ToxicExists):
        proxies.add_toxic("echo", Latency(latency_ms=2))
    with pytest.raises(UnknownToxic):
        proxies.remove_toxic("echo", "nope")
    with pytest.raises(UnknownProxy):
        proxies.add_toxic("nope", Down())
    with pytest.raises(ProxyExists):
        proxies.add_proxy("echo", "127.0.0.1", echo.port)
    with pytest.raises(ListenFailed):
        proxies.add_proxy("clash", "127.0.0.1", echo.port, listen_port=echo_port)
    assert [t.name for t in proxies.toxics("echo")] == ["latency"]

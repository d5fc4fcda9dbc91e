"""Replicas behind one DNS name: every address is a replica, attempts rotate over them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiohttp import web

from metallica.protools.clients import ServiceClients
from metallica.protools.engine import Call, Outcome, Response, Succeeded
from metallica.protools.resolver import ServiceReplicas, Target


class FakeDns:
    """An injected resolver: answers from a table, counts lookups, fails on demand."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[tuple[str, int]] = []
        self.failing = False

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append((host, port))
        await asyncio.sleep(0)
        if self.failing:
            raise OSError("no DNS today")
        return list(self.table.get(host, []))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def call(key: str = "wf-1/password") -> Call:
    return Call("password", "generator", "POST", "/v1/passwords", {"username": "a"}, key)


def test_a_name_becomes_one_target_per_address_sorted_with_its_host_header() -> None:
    dns = FakeDns({"generator": ["10.0.0.12", "10.0.0.3", "10.0.0.12", "10.0.0.7"]})

    async def main() -> tuple[Target, ...]:
        replicas = ServiceReplicas(["http://generator:8000/"], resolve=dns)
        await replicas.ready()
        return replicas.targets()

    assert asyncio.run(main()) == tuple(
        Target(f"http://10.0.0.{n}:8000", "generator:8000") for n in (3, 7, 12)
    )
    assert dns.lookups == [("generator", 8000)]


def test_addresses_localhost_and_https_are_used_as_configured() -> None:
    dns = FakeDns({"mailer": ["fd00::2", "fd00::1"]})
    urls = [
        "http://127.0.0.1:8100",
        "http://[::1]:8101",
        "http://localhost:8102",
        "https://mailer.example:443",
        "http://mailer/base",
    ]

    async def main() -> tuple[Target, ...]:
        replicas = ServiceReplicas(urls, resolve=dns)
        await replicas.ready()
        return replicas.targets()

    assert asyncio.run(main()) == (
        Target("http://127.0.0.1:8100"),
        Target("http://[::1]:8101"),
        Target("http://localhost:8102"),
        Target("https://mailer.example:443"),
        Target("http://[fd00::1]/base", "mailer"),
        Target("http://[fd00::2]/base", "mailer"),
    )
    assert dns.lookups == [("mailer", 80)]


def test_only_urls_without_names_need_no_lookup() -> None:
    replicas = ServiceReplicas(["http://127.0.0.1:8100"], resolve=FakeDns({}))

    assert replicas.looked_up
    assert replicas.targets() == (Target("http://127.0.0.1:8100"),)


def test_lookups_are_cached_and_refreshed_in_the_background_past_the_ttl() -> None:
    dns = FakeDns({"generator": ["10.0.0.1", "10.0.0.2"]})
    clock = Clock()

    async def main() -> None:
        replicas = ServiceReplicas(["http://generator:8000"], resolve=dns, ttl=5.0, clock=clock)
        await replicas.ready()
        for _ in range(100):  # calls within the TTL look nothing up
            assert len(replicas.targets()) == 2
        assert len(dns.lookups) == 1

        dns.table["generator"] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        clock.now = 5.0
        stale = replicas.targets()  # does not wait: the old answer, a lookup started
        assert len(stale) == 2
        assert len(replicas.targets()) == 2  # one lookup at a time
        await asyncio.sleep(0.01)
        assert len(dns.lookups) == 2
        assert [t.url for t in replicas.targets()] == [f"http://10.0.0.{n}:8000" for n in (1, 2, 3)]
        await replicas.aclose()

    asyncio.run(main())


def test_a_failed_lookup_keeps_the_last_addresses_and_a_name_never_resolved_is_used_as_is() -> None:
    dns = FakeDns({"generator": ["10.0.0.1", "10.0.0.2"]})
    clock = Clock()

    async def main() -> None:
        never = ServiceReplicas(["http://nowhere:8000"], resolve=dns, clock=clock)
        await never.ready()
        assert never.targets() == (Target("http://nowhere:8000"),)  # no address: as configured

        replicas = ServiceReplicas(["http://generator:8000"], resolve=dns, clock=clock)
        await replicas.ready()
        dns.failing = True
        clock.now = 10.0
        await replicas.refresh()
        assert [t.url for t in replicas.targets()] == [
            "http://10.0.0.1:8000",
            "http://10.0.0.2:8000",
        ]

    asyncio.run(main())


def test_concurrent_first_calls_share_one_lookup() -> None:
    dns = FakeDns({"generator": ["10.0.0.1"]})

    async def main() -> None:
        replicas = ServiceReplicas(["http://generator:8000"], resolve=dns)
        await asyncio.gather(*(replicas.ready() for _ in range(20)))
        assert replicas.looked_up

    asyncio.run(main())
    assert len(dns.lookups) == 1


def test_the_attempts_of_a_call_rotate_over_the_addresses_of_one_name() -> None:
    dns = FakeDns({"generator": ["10.0.0.3", "10.0.0.1", "10.0.0.2"]})

    async def main() -> list[list[str]]:
        clients = ServiceClients(
            {"generator": ["http://generator:8000"]},
            token="t" * 32,
            connect_timeout=1.0,
            call_timeout=1.0,
            max_connections=4,
            resolve=dns,
        )
        try:
            await clients._replicas["generator"].ready()
            return [
                [clients.replica_for(call(f"wf-{n}/password"), attempt) for attempt in (1, 2, 3, 4)]
                for n in range(20)
            ]
        finally:
            await clients.aclose()

    every = {f"http://10.0.0.{n}:8000" for n in (1, 2, 3)}
    for attempts in asyncio.run(main()):
        assert set(attempts[:3]) == every  # three attempts, three replicas
        assert attempts[3] == attempts[0]


def test_an_attempt_connects_to_the_address_and_names_the_configured_host() -> None:
    seen: list[str] = []

    async def passwords(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.json_response({"username": "a", "password": "p"}, status=201)

    def interpret(response: Response) -> Outcome:
        return Succeeded(dict(response.body))

    async def main() -> tuple[int, str, Outcome]:
        app = web.Application()
        app.router.add_post("/v1/passwords", passwords)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        clients = ServiceClients(
            {"generator": [f"http://generator.test:{port}"]},
            token="t" * 32,
            connect_timeout=1.0,
            call_timeout=5.0,
            max_connections=4,
            resolve=FakeDns({"generator.test": ["127.0.0.1"]}),
        )
        try:
            replica, answer = await clients.send(call(), 1)
            outcome = interpret(answer) if isinstance(answer, Response) else answer
        finally:
            await clients.aclose()
            await runner.cleanup()
        return port, replica, outcome

    port, replica, outcome = asyncio.run(main())

    assert replica == f"http://127.0.0.1:{port}"
    assert outcome == Succeeded({"username": "a", "password": "p"})
    assert seen == [f"generator.test:{port}"]


@pytest.mark.parametrize("url", ["http://generator:notaport", "http://user@generator:8000"])
def test_odd_urls_are_used_as_configured(url: str) -> None:
    replicas = ServiceReplicas([url], resolve=FakeDns({"generator": ["10.0.0.1"]}))

    assert replicas.looked_up
    assert replicas.targets() == (Target(url),)

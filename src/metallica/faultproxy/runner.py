"""ProxyThread: fault proxies on an event loop of their own, driven from synchronous code.

Made for pytest: a test starts a ``ProxyThread``, adds a proxy in front of the server it talks
to, and adds and removes toxics with plain calls, which return once the change is in force (a
``down`` toxic has closed the port and every connection, a removed one has opened the port
again). Errors of the proxies (:class:`~metallica.faultproxy.errors.UnknownProxy`,
:class:`~metallica.faultproxy.errors.ToxicExists`, ...) are raised in the caller's thread.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from metallica.faultproxy.registry import ProxyRegistry, format_address
from metallica.faultproxy.stats import ProxyStats
from metallica.faultproxy.toxics import Toxic

T = TypeVar("T")


class ProxyThread:
    """A background thread running an event loop with any number of named fault proxies.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). Every call waits at
    most ``timeout`` seconds for the loop to do it. ``seed`` makes toxicity and jitter repeatable.
    """

    def __init__(
        self, *, seed: int | None = None, timeout: float = 10.0, connect_timeout: float = 5.0
    ) -> None:
        self._registry = ProxyRegistry(rng=random.Random(seed), connect_timeout=connect_timeout)
        self._timeout = timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._state_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and its loop; returns when the loop runs."""
        ready = threading.Event()
        with self._state_lock:
            if self._thread is not None:
                raise RuntimeError("this ProxyThread was already started")
            self._thread = threading.Thread(
                target=self._main, args=(ready,), name="faultproxy", daemon=True
            )
            self._thread.start()
        if not ready.wait(self._timeout):
            raise RuntimeError("the fault proxy loop did not start")
        return self

    def stop(self) -> None:
        """Stop every proxy (closing all their connections), the loop and the thread."""
        with self._state_lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            self._loop = None
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(self._timeout)
        if thread.is_alive():
            raise RuntimeError("the fault proxy thread did not stop")

    def _main(self, ready: threading.Event) -> None:
        with asyncio.Runner() as runner:
            runner.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._registry.close()

    # --- proxies -------------------------------------------------------------------------------

    def add_proxy(
        self,
        name: str,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> int:
        """Create and start a proxy to ``upstream_host:upstream_port``; returns its port."""
        listen = format_address(listen_host, listen_port)
        upstream = format_address(upstream_host, upstream_port)

        async def create() -> int:
            proxy = await self._registry.create(name, listen, upstream)
            return proxy.port

        return self._call(create)

    def remove_proxy(self, name: str) -> None:
        """Stop the proxy and close its connections."""
        self._call(lambda: self._registry.delete(name))

    def port(self, name: str) -> int:
        """The port the proxy listens on."""
        return self._call_sync(lambda: self._registry.get(name).port)

    def stats(self, name: str) -> ProxyStats:
        return self._call_sync(lambda: self._registry.get(name).stats())

    # --- toxics --------------------------------------------------------------------------------

    def add_toxic(self, proxy_name: str, toxic: Toxic) -> None:
        """Put ``toxic`` on the proxy; it acts on open connections too."""
        self._call(lambda: self._registry.get(proxy_name).add_toxic(toxic))

    def remove_toxic(self, proxy_name: str, toxic_name: str) -> None:
        self._call(lambda: self._registry.get(proxy_name).remove_toxic(toxic_name))

    def clear(self, proxy_name: str | None = None) -> None:
        """Take every toxic off one proxy, or off all of them."""

        async def clear() -> None:
            if proxy_name is not None:
                await self._registry.get(proxy_name).clear()
                return
            for proxy in self._registry.all():
                await proxy.clear()

        self._call(clear)

    def toxics(self, proxy_name: str) -> tuple[Toxic, ...]:
        return self._call_sync(lambda: self._registry.get(proxy_name).toxics())

    # --- crossing threads ----------------------------------------------------------------------

    def _call(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``work()`` on the loop and wait for its result (or exception)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the ProxyThread is not running: call start() first")
        if threading.current_thread() is self._thread:
            raise RuntimeError("ProxyThread methods are for other threads (they would deadlock)")
        coroutine = work()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except BaseException:
            coroutine.close()  # never scheduled: close it, or it warns "never awaited"
            raise
        try:
            return future.result(self._timeout)
        except TimeoutError:
            if future.done():
                raise  # the work itself raised it
            future.cancel()
            raise TimeoutError(f"the fault proxy loop did not answer in {self._timeout}s") from None

    def _call_sync(self, work: Callable[[], T]) -> T:
        async def call() -> T:
            return work()

        return self._call(call)

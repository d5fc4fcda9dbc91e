"""Blocking calls (storage, fault points) from async code, on one thread pool per process.

A ``concurrent.futures.ThreadPoolExecutor`` hands work over through a lock-free queue: measured
here, a third of the CPU of Starlette's ``run_in_threadpool`` (anyio) per call, and a storage
call is several of them per workflow. The caller's context variables go along (the fault
points read the attempt number from one).

**Cancellation waits for the thread.** A thread cannot be stopped; a task cancelled while its
call runs in one used to end at once and leave the call running, holding a database connection.
Its owner then closed the database under it: closing a ``sqlite3`` connection while another
thread runs a statement on it is undefined behaviour in the C module, and it crashed a test
worker with a segmentation fault. So, as anyio's ``to_thread.run_sync`` does by default, a
cancelled :func:`in_thread` first waits for the call to return, then raises
:class:`asyncio.CancelledError`: cancelling a loop and awaiting it means that nothing it handed
to a thread still runs. The wait is bounded by the call itself (every storage call is bounded by
the database's lock and statement timeouts). A caller that must answer within a time of its
own, whatever the thread does (the readiness check), uses :func:`within`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Threads enough for every pooled database connection of a service, and then some.
_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="metallica-blocking")
# Tasks :func:`within` stopped waiting for, still running: referenced until they end.
_ABANDONED: set[asyncio.Task[object]] = set()


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function(*args, **kwargs)`` on the pool, in a copy of the caller's context.

    Cancelled, it waits for the call to return before it raises ``CancelledError``."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    future = asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            # Cancelled again while waiting: keep waiting, the thread is still at work.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: its outcome is nobody's now
        raise


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result if it comes within ``seconds``; otherwise :class:`TimeoutError`,
    at once, while the work goes on to its end in the background (its threads are never cut
    short: see the module's docstring)."""
    task: asyncio.Task[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([task], timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if task in done:
        return task.result()
    _abandon(task)
    raise TimeoutError(f"no answer within {seconds} s")


def _abandon(task: asyncio.Task[T]) -> None:
    _ABANDONED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[object]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits for it any more

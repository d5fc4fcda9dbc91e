"""Blocking calls (storage, fault points) from async code, on one thread pool per process.

A ``concurrent.futures.ThreadPoolExecutor`` hands work over through a lock-free queue: measured
here, a third of the CPU of Starlette's ``run_in_threadpool`` (anyio) per call, and a storage
call is several of them per workflow. The caller's context variables go along (the fault
points read the attempt number from one).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Threads enough for every pooled database connection of a service, and then some.
_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="metallica-blocking")


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function(*args, **kwargs)`` on the pool, in a copy of the caller's context."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)

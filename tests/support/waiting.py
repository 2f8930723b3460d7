"""Wait until a condition holds, with a timeout: the one replacement for sleeps in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "the condition", *,
               interval: float = 0.1, retry_on: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises ``AssertionError`` naming ``what`` (and the last value or error seen) after ``timeout`` seconds.
    Exceptions of the types in ``retry_on`` count as "not yet"; any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            value = None
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str = "the condition",
                           *, interval: float = 0.05) -> Any:
    """``wait_until`` for a coroutine predicate, sleeping with ``asyncio.sleep`` between tries."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)

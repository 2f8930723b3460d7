"""The shared test helpers do what the tests rely on: wait until true or fail naming what, a port that binds."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support import free_port, wait_until, wait_until_async


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], "ready"])
    assert wait_until(lambda: next(values), 5, "a value", interval=0) == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the moon; last: 0"):
        wait_until(lambda: 0, 0.05, "the moon", interval=0.01)


def test_wait_until_retries_only_the_errors_it_is_told_to() -> None:
    calls = iter([ConnectionError("not yet"), ConnectionError("not yet"), True])

    def flaky() -> bool:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(flaky, 5, "the server", interval=0, retry_on=(ConnectionError,)) is True
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], 5, "a key", retry_on=(ConnectionError,))


def test_wait_until_async_awaits_the_predicate() -> None:
    state = {"n": 0}

    async def third_time() -> bool:
        state["n"] += 1
        return state["n"] >= 3

    assert asyncio.run(wait_until_async(third_time, 5, "the third call", interval=0)) is True
    with pytest.raises(AssertionError, match="never"):
        asyncio.run(wait_until_async(lambda: asyncio.sleep(0, result=False), 0.05, "never", interval=0.01))


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port

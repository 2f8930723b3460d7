"""Every ``Lease`` implementation, on SQLite and PostgreSQL: take, renew, refuse a second holder, pass on
after expiry or release, and compare times in UTC whatever zone ``now`` is given in."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from modelyard.registry.lease import Lease, SqlLease

LeaseFactory = Callable[..., Lease]
IMPLEMENTATIONS: list[LeaseFactory] = [SqlLease]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda f: f.__name__)
def make_lease(request: pytest.FixtureRequest, engine: Engine) -> Callable[..., Lease]:
    factory = request.param
    return lambda holder, ttl=30.0, name="contract-lease": factory(engine, name, holder=holder, ttl=ttl)


def test_implements_the_protocol(make_lease: Callable[..., Lease]) -> None:
    lease = make_lease("a")
    assert isinstance(lease, Lease) and lease.holder == "a" and lease.name == "contract-lease"


def test_first_holder_takes_renews_and_a_second_is_refused(make_lease: Callable[..., Lease]) -> None:
    a, b = make_lease("a"), make_lease("b")
    assert a.holder_now() is None
    assert a.acquire() and a.acquire()  # taken, then renewed
    assert not b.acquire()
    assert b.holder_now() == "a" and a.holder_now() == "a"


def test_leases_of_different_names_are_independent(make_lease: Callable[..., Lease]) -> None:
    assert make_lease("a", name="one").acquire() and make_lease("b", name="two").acquire()
    assert not make_lease("b", name="one").acquire()


def test_release_hands_over_at_once(make_lease: Callable[..., Lease]) -> None:
    a, b = make_lease("a"), make_lease("b")
    assert a.acquire()
    b.release()  # not the holder: nothing changes
    assert a.holder_now() == "a" and not b.acquire()
    a.release()
    assert a.holder_now() is None
    assert b.acquire() and not a.acquire() and b.holder_now() == "b"


def test_passes_on_after_expiry(make_lease: Callable[..., Lease]) -> None:
    t0 = datetime.now(UTC)
    a, b = make_lease("a", ttl=30.0), make_lease("b", ttl=30.0)
    assert a.acquire(t0)
    assert not b.acquire(t0 + timedelta(seconds=29))
    assert b.acquire(t0 + timedelta(seconds=31))  # a stopped renewing: its lease ran out
    assert not a.acquire(t0 + timedelta(seconds=32)) and a.holder_now() == "b"


def test_passes_on_after_expiry_in_real_time(make_lease: Callable[..., Lease]) -> None:
    a, b = make_lease("a", ttl=30.0), make_lease("b", ttl=1.0)
    assert b.acquire() and not a.acquire()
    deadline = time.monotonic() + 10
    while not a.acquire():
        assert time.monotonic() < deadline, "the expired lease was never taken over"
        time.sleep(0.05)
    assert a.holder_now() == "a" and not b.acquire()


def test_times_compare_in_utc_whatever_the_zone_of_now(make_lease: Callable[..., Lease]) -> None:
    t0 = datetime.now(UTC)
    east = timezone(timedelta(hours=10))
    a, b = make_lease("a", ttl=60.0), make_lease("b", ttl=60.0)
    assert a.acquire(t0.astimezone(east))  # stored as 10:00 wall time would make it look hours away
    assert not b.acquire(t0 + timedelta(seconds=30))
    assert not b.acquire((t0 + timedelta(seconds=30)).replace(tzinfo=None))  # naive: taken as UTC
    assert b.acquire((t0 + timedelta(seconds=61)).astimezone(timezone(timedelta(hours=-7))))
    assert a.holder_now() == "b"

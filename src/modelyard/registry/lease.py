"""A named lease in the shared database: among replicas, the one holding it acts; the others stand by.

Taken or renewed with one conditional UPDATE (``holder = me OR expired OR released``), else one INSERT; the
primary key on the name makes a concurrent INSERT fail. On PostgreSQL a concurrent UPDATE re-checks its
condition after the first one commits, and SQLite has a single writer, so two processes never both hold it.
A holder that dies simply stops renewing, and the lease passes on once ``ttl`` has run out.

Times are compared in UTC: SQLite stores and returns naive datetimes, so every time written or compared is
first converted to UTC (an aware ``now`` in another zone would otherwise be stored as local wall time).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.registry import tables as t


def default_holder() -> str:
    """This process, unique per lease object: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def as_utc(when: datetime) -> datetime:
    """An aware UTC datetime; naive values (what SQLite hands back) are taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@runtime_checkable
class Lease(Protocol):
    """One named lease: ``acquire()`` takes or renews it, ``release()`` hands it over at once."""

    name: str
    holder: str

    def acquire(self, now: datetime | None = None) -> bool: ...

    def release(self) -> None: ...

    def holder_now(self) -> str | None: ...


class SqlLease:
    """The lease as a row of ``modelyard_leases``; ``ttl`` seconds without renewal and it passes on."""

    def __init__(self, engine: Engine, name: str, *, holder: str | None = None, ttl: float = 30.0) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = ttl

    def acquire(self, now: datetime | None = None) -> bool:
        """Take the lease, or renew it if we hold it; False while another live holder has it."""
        now = as_utc(now or datetime.now(UTC))
        expires = now + timedelta(seconds=self.ttl)
        lease = t.leases.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t.leases)
                .where(and_(lease.name == self.name, or_(
                    lease.holder == self.holder, lease.expires_at < now, lease.active.is_(False))))
                .values(holder=self.holder, expires_at=expires, active=True)
            ).rowcount
        if taken == 1:
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.leases).values(name=self.name, holder=self.holder, expires_at=expires,
                                                     active=True))
            return True
        except IntegrityError:
            return False  # the row exists and another live holder has it (or just inserted it)

    def release(self) -> None:
        """Let another replica take over at once (a graceful stop); a no-op when we do not hold it."""
        with self.engine.begin() as conn:
            conn.execute(update(t.leases)
                         .where(and_(t.leases.c.name == self.name, t.leases.c.holder == self.holder))
                         .values(active=False))

    def holder_now(self) -> str | None:
        """Who holds the lease according to the database (expired or not); None once released."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.leases.c.holder, t.leases.c.active)
                               .where(t.leases.c.name == self.name)).first()
        return None if row is None or not row[1] else str(row[0])

    def expires_at(self) -> datetime | None:
        """When the current holding runs out (UTC), or None when there is no row."""
        with self.engine.connect() as conn:
            value = conn.execute(select(t.leases.c.expires_at).where(t.leases.c.name == self.name)).scalar()
        return None if value is None else as_utc(value)

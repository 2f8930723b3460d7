"""A named lease in the shared database: among replicas, the one holding it acts; the others stand by.

Taken or renewed with one conditional UPDATE (``holder = me OR expired``), else one INSERT; the primary key
on the name makes a concurrent INSERT fail. On PostgreSQL a concurrent UPDATE re-checks its condition after
the first one commits, and SQLite has a single writer, so two processes never both hold it. A holder that
dies simply stops renewing, and the lease passes on once ``ttl`` has run out.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.registry import tables as t

__all__ = ["SqlLease", "default_holder"]


def default_holder() -> str:
    """``host:pid:random``: unique per process and per lease object, readable in the table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SqlLease:
    """A named lease row in ``my_leases``: ``acquire()`` takes or renews it, ``release()`` frees it."""

    def __init__(self, engine: Engine, name: str, *, holder: str | None = None, ttl: float = 30.0) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = ttl

    def acquire(self) -> bool:
        """Take the lease, or renew it if we hold it; False while another live holder has it."""
        now = t.utcnow()
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
            return False

    def release(self) -> None:
        """Let another replica take over at once (a graceful stop)."""
        with self.engine.begin() as conn:
            conn.execute(update(t.leases)
                         .where(and_(t.leases.c.name == self.name, t.leases.c.holder == self.holder))
                         .values(active=False))

    def holder_now(self) -> str | None:
        """Who holds the lease according to the database (expired or not)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.leases.c.holder, t.leases.c.active)
                               .where(t.leases.c.name == self.name)).first()
        return None if row is None or not row[1] else str(row[0])

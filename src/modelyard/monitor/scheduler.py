"""The one scheduler of checks over the prediction log: a lease, and the rule sets it runs while it holds it.

Every server process (every uvicorn worker of every replica) runs one ``Scheduler``; the lease row in the
shared database (``registry.lease.SqlLease``, name ``LEASE``) lets exactly one of them act, and passes to
another when its holder releases it (a graceful stop) or dies (the lease runs out). Each registered rule set
(``monitor.rules.RuleSet``: the monitor's alert rules, the canary watcher's rollback rules) runs every
``every`` seconds; the scheduler ticks at the shortest of them and renews the lease before each rule set, so
a long evaluation of one never lets the lease lapse for the next. Chores (``Chore``: the fleet heartbeat)
run at every tick they are due in every process, lease or not, before the rule sets.

Wiring, in the server (``serve/monitoring.py``)::

    scheduler = Scheduler(SqlLease(registry.engine, LEASE, ttl=30), [alerts, canary])
    task = asyncio.create_task(scheduler.run_forever(stop_event, after=refresh))
    ...
    scheduler.release()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from modelyard.durations import format_duration
from modelyard.errors import ConfigError
from modelyard.monitor.rules import RuleSet, RuleSetRun

__all__ = ["LEASE", "Chore", "LeaseLike", "Scheduler", "SchedulerRun"]

log = logging.getLogger("modelyard.monitor")
LEASE = "modelyard-scheduler"


class LeaseLike(Protocol):
    """What the scheduler needs of a lease (``registry.lease.SqlLease``)."""

    holder: str
    ttl: float

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Chore(Protocol):
    """Work every process does for itself on the scheduler's ticks, lease or not (``monitor.fleet.FleetMember``)."""

    @property
    def name(self) -> str: ...

    @property
    def every(self) -> float: ...

    def describe(self) -> str: ...

    def run(self, now: datetime) -> None: ...


@dataclass
class SchedulerRun:
    """One tick: whether this process held the lease, and each rule set's run (by name) if it ran."""

    at: datetime
    leader: bool
    results: dict[str, RuleSetRun] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Rule set → the error its run raised (the others still ran)."""
    skipped: str | None = None


class Scheduler:
    """Call ``run_once()`` (tests, cron: every rule set) or ``await run_forever(stop)`` (the server).

    ``lease=None`` runs without one (a single process, a report): every run then acts.
    """

    def __init__(self, lease: LeaseLike | None, rule_sets: Sequence[RuleSet],
                 chores: Sequence[Chore] = ()) -> None:
        periods = [(rs.name, rs.every) for rs in rule_sets] + [(c.name, c.every) for c in chores]
        names = [name for name, _ in periods]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"a scheduler needs rule sets or chores with distinct names, got {names}")
        for name, every in periods:
            if every <= 0:
                raise ConfigError(f"rule set {name!r}: every must be above 0 seconds, got {every}")
        self.lease = lease
        self.rule_sets = list(rule_sets)
        self.chores = list(chores)
        self.holder = lease.holder if lease is not None else "this process"
        self.leading: bool | None = None
        self.last_run: SchedulerRun | None = None
        self._last: dict[str, float] = {}  # rule set → monotonic time of its last run

    @property
    def interval(self) -> float:
        """Seconds between ticks: the shortest ``every`` of the rule sets and chores."""
        return min([rs.every for rs in self.rule_sets] + [c.every for c in self.chores])

    def describe(self) -> str:
        """One line for the start-up log: the tick, the lease and every rule set."""
        lease = f"lease {self.lease_ttl_text()}" if self.lease is not None and self.rule_sets else "no lease"
        return (f"scheduler every {format_duration(self.interval)} ({lease}): "
                + "; ".join([rs.describe() for rs in self.rule_sets] + [c.describe() for c in self.chores]))

    def lease_ttl_text(self) -> str:
        return f"ttl {format_duration(self.lease.ttl)}" if self.lease is not None else "none"

    def _holds(self) -> bool:
        return self.lease is None or self.lease.acquire()

    def renew(self) -> bool:
        """``HeldLease.renew`` for the rule sets: take or renew the lease, True while this process holds it."""
        return self._holds()

    def _note_leadership(self, leading: bool) -> None:
        if leading != self.leading:
            names = ", ".join(rs.name for rs in self.rule_sets)
            log.info("scheduler (%s): %s", names, "this process evaluates and acts (lease taken)" if leading
                     else "another process acts (lease held elsewhere); this one skips its runs")
            self.leading = leading

    def run_once(self, now: datetime | None = None, *, due_only: bool = False) -> SchedulerRun:
        """Take (or renew) the lease and run every rule set (only those due, with ``due_only``)."""
        now = now or datetime.now(UTC)
        failed = self._chores(now, due_only)
        if not self.rule_sets:
            self.last_run = SchedulerRun(at=now, leader=False, failed=failed, skipped="no rule sets")
            return self.last_run
        leading = self._holds()
        self._note_leadership(leading)
        run = SchedulerRun(at=now, leader=leading, failed=failed)
        if not leading:
            run.skipped = "another process holds the scheduler lease"
            for rs in self.rule_sets:
                rs.standby()
            self.last_run = run
            return run
        for rs in self.rule_sets:
            started = time.monotonic()
            if due_only and started - self._last.get(rs.name, -1e18) < rs.every - 1e-3:
                continue
            if rs is not self.rule_sets[0] and not self._holds():  # renewed before each rule set
                self._note_leadership(False)
                run.skipped = f"the lease was lost before {rs.name!r} ran"
                break
            self._last[rs.name] = started
            try:
                run.results[rs.name] = rs.run(now, self)
            except Exception as exc:  # the database may be away for a while: keep scheduling
                log.warning("scheduler: %s run failed: %s", rs.name, str(exc).splitlines()[0] if str(exc) else
                            type(exc).__name__)
                run.failed[rs.name] = f"{type(exc).__name__}: {exc}"
        self.last_run = run
        return run

    def _chores(self, now: datetime, due_only: bool) -> dict[str, str]:
        failed: dict[str, str] = {}
        for chore in self.chores:
            started = time.monotonic()
            if due_only and started - self._last.get(chore.name, -1e18) < chore.every - 1e-3:
                continue
            self._last[chore.name] = started
            try:
                chore.run(now)
            except Exception as exc:  # the database may be away: the next tick tries again
                log.warning("scheduler: %s failed: %s", chore.name, str(exc).splitlines()[0] if str(exc) else
                            type(exc).__name__)
                failed[chore.name] = f"{type(exc).__name__}: {exc}"
        return failed

    def release(self) -> None:
        """Give the lease up (shutdown), so another process takes over at its next tick."""
        if self.lease is not None and self.leading and self.rule_sets:
            self.lease.release()

    async def run_forever(self, stop: asyncio.Event,
                          after: Callable[[SchedulerRun], Awaitable[None]] | None = None) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set; blocking work runs in a thread.

        ``after(run)`` is awaited on the event loop after each tick (the server refreshes its aliases when
        the canary rule set rolled one back)."""
        while not stop.is_set():
            try:
                run = await asyncio.to_thread(self.run_once, due_only=True)
                if after is not None:
                    await after(run)
            except Exception as exc:
                log.warning("scheduler run failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

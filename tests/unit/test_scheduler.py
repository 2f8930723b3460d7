"""The one scheduler: a lease, then every registered rule set when due; standby when the lease is elsewhere."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from modelyard.errors import ConfigError
from modelyard.monitor.rules import Finding, HeldLease, RuleSetRun
from modelyard.monitor.scheduler import Scheduler

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class FakeLease:
    holder: str = "me"
    ttl: float = 30.0
    answers: list[bool] = field(default_factory=list)
    released: int = 0

    def acquire(self) -> bool:
        return self.answers.pop(0) if self.answers else True

    def release(self) -> None:
        self.released += 1


@dataclass
class Recorder:
    name: str
    every: float = 1.0
    fail: bool = False
    runs: list[str] = field(default_factory=list)
    standbys: int = 0

    def describe(self) -> str:
        return f"{self.name} every {self.every:g}s"

    def run(self, now: datetime, lease: HeldLease) -> RuleSetRun:
        self.runs.append(lease.holder)
        if self.fail:
            raise RuntimeError("database away")
        return RuleSetRun(now, [Finding("m", 1, self.name, True, 1.0, 0.5, "over")])

    def standby(self) -> None:
        self.standbys += 1


def test_the_holder_runs_every_rule_set_and_passes_the_lease_to_them() -> None:
    a, b = Recorder("alerts", every=60), Recorder("canary", every=5)
    scheduler = Scheduler(FakeLease(), [a, b])
    run = scheduler.run_once(NOW)
    assert run.leader and run.skipped is None and set(run.results) == {"alerts", "canary"}
    assert a.runs == ["me"] and b.runs == ["me"] and scheduler.interval == 5
    assert scheduler.describe() == "scheduler every 5s (lease ttl 30s): alerts every 60s; canary every 5s"


def test_due_only_runs_a_rule_set_once_per_its_own_interval() -> None:
    slow, fast = Recorder("alerts", every=3600), Recorder("canary", every=0.001)
    scheduler = Scheduler(FakeLease(), [slow, fast])
    for _ in range(3):
        scheduler.run_once(NOW, due_only=True)
    assert len(slow.runs) == 1 and len(fast.runs) == 3


def test_without_the_lease_nothing_runs_and_every_rule_set_stands_by() -> None:
    a, lease = Recorder("alerts"), FakeLease(answers=[False])
    scheduler = Scheduler(lease, [a])
    run = scheduler.run_once(NOW)
    assert not run.leader and run.skipped and run.results == {} and a.runs == [] and a.standbys == 1
    scheduler.release()
    assert lease.released == 0  # a standby has nothing to release


def test_a_lease_lost_between_rule_sets_stops_the_tick() -> None:
    a, b = Recorder("alerts"), Recorder("canary")
    run = Scheduler(FakeLease(answers=[True, False]), [a, b]).run_once(NOW)
    assert a.runs and not b.runs and "before 'canary'" in str(run.skipped)


def test_a_failing_rule_set_does_not_stop_the_others() -> None:
    broken, ok = Recorder("alerts", fail=True), Recorder("canary")
    run = Scheduler(None, [broken, ok]).run_once(NOW)
    assert "database away" in run.failed["alerts"] and run.results["canary"].findings[0].firing


def test_rule_sets_need_distinct_names_and_a_positive_interval() -> None:
    with pytest.raises(ConfigError, match="distinct names"):
        Scheduler(None, [Recorder("a"), Recorder("a")])
    with pytest.raises(ConfigError, match="above 0"):
        Scheduler(None, [Recorder("a", every=0)])


def test_run_forever_ticks_until_stopped_then_releases_the_lease() -> None:
    lease, a = FakeLease(), Recorder("alerts", every=0.01)
    scheduler = Scheduler(lease, [a])
    seen: list[bool] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def after(run: object) -> None:
            seen.append(True)
            if len(seen) >= 3:
                stop.set()

        await asyncio.wait_for(scheduler.run_forever(stop, after=after), timeout=10)
        scheduler.release()

    asyncio.run(main())
    assert len(a.runs) >= 3 and lease.released == 1


@dataclass
class Chore:
    name: str = "heartbeat"
    every: float = 2.0
    fail: bool = False
    runs: int = 0

    def describe(self) -> str:
        return f"{self.name} every {self.every:g}s"

    def run(self, now: datetime) -> None:
        self.runs += 1
        if self.fail:
            raise RuntimeError("database away")


def test_chores_run_in_every_process_lease_or_not_and_a_scheduler_may_have_chores_only() -> None:
    rules, chore = Recorder("canary", every=5), Chore()
    scheduler = Scheduler(FakeLease(answers=[False]), [rules], chores=[chore])
    run = scheduler.run_once(NOW)
    assert not run.leader and rules.runs == [] and chore.runs == 1  # standby, yet the heartbeat is written
    assert scheduler.interval == 2 and scheduler.describe().endswith("canary every 5s; heartbeat every 2s")
    lease = FakeLease()
    alone = Scheduler(lease, [], chores=[Chore(fail=True)])
    run = alone.run_once(NOW)
    assert run.failed == {"heartbeat": "RuntimeError: database away"} and run.skipped == "no rule sets"
    alone.release()
    assert lease.released == 0 and alone.describe() == "scheduler every 2s (no lease): heartbeat every 2s"

"""The canary rule set, run by the scheduler, rolls back an unhealthy canary from the prediction log, and
only one replica acts (the scheduler's lease)."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelyard.config import Settings
from modelyard.monitor.scheduler import LEASE, Scheduler
from modelyard.registry import Registry
from modelyard.registry.lease import SqlLease
from modelyard.rollout import CanaryRuleSet, WatchRules, WatchRun, promote, set_watch_rules
from tests.conftest import cli_env
from tests.rollout_helpers import MODEL, house_spec_folder, log, publish, records, train_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("houses")
    return train_bundle(house_spec_folder(root / "spec"), root / "bundle")


def watch_once(settings: Settings, rules: WatchRules | None = None, *, holder: str | None = None) -> WatchRun:
    """One scheduler tick with the canary rule set only, as ``modelyard watch --once`` runs it."""
    registry = Registry(settings)
    run = Scheduler(SqlLease(registry.engine, LEASE, holder=holder), [CanaryRuleSet(registry, rules)]).run_once()
    result = run.results.get(CanaryRuleSet.name)
    assert result is None or isinstance(result, WatchRun)
    return result if result is not None else WatchRun(at=run.at, leader=False)


def _canary(settings: Settings, bundle: Path, weight: float = 0.2) -> tuple[int, int]:
    v1 = publish(settings, bundle, alias="production")
    v2 = publish(settings, bundle)
    promote(Registry(settings), MODEL, v2, to="canary", weight=weight, force=True, actor="alice")
    return v1, v2


def _traffic(settings: Settings, v1: int, v2: int, *, canary_errors: int, canary_output: float = 100.0,
             canary_latency: float = 5.0, n: int = 100) -> None:
    """``n`` canary requests, each mirrored to the primary under the same request id, plus 4n primary ones."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    log(settings, records(MODEL, v1, "primary", n, request_ids=ids))
    log(settings, records(MODEL, v1, "primary", 4 * n))
    log(settings, records(MODEL, v2, "canary", n, errors=canary_errors, outputs=[canary_output] * n,
                          request_ids=ids, latency_ms=canary_latency))


def test_canary_with_30_percent_errors_is_rolled_back(any_settings: Settings, bundle: Path) -> None:
    v1, v2 = _canary(any_settings, bundle)
    _traffic(any_settings, v1, v2, canary_errors=30)
    run = watch_once(any_settings, holder="replica-a")
    assert run.leader and run.rolled_back == [MODEL]
    registry = Registry(any_settings)
    assert registry.aliases(MODEL)["canary"].weight == 0.0
    assert registry.aliases(MODEL)["production"].version == v1
    event = registry.events(MODEL)[0]
    assert (event.kind, event.alias, event.to_version) == ("rollback", "canary", v2)
    assert event.actor == "watcher:replica-a" and "error rate 30.0% > 5.0%" in event.reason
    assert event.details["error_rate"] == pytest.approx(0.3)
    assert event.details["requests"] == 100 and event.details["errors"] == 30
    assert event.details["rules"]["max_error_rate"] == 0.05 and event.details["weight"] == 0.0
    again = watch_once(any_settings, holder="replica-a")  # weight 0: nothing left to watch
    assert again.checked == [] and [e.kind for e in registry.events(MODEL)].count("rollback") == 1


def test_healthy_canary_is_left_alone(any_settings: Settings, bundle: Path) -> None:
    v1, v2 = _canary(any_settings, bundle)
    _traffic(any_settings, v1, v2, canary_errors=2, canary_output=101.0)
    run = watch_once(any_settings)
    (health,) = run.checked
    assert run.rolled_back == [] and health.breaches == []
    assert health.error_rate == pytest.approx(0.02) and health.disagreement == 0.0
    assert health.compared_rows == 98
    assert Registry(any_settings).aliases(MODEL)["canary"].weight == 0.2


@pytest.mark.parametrize(("output", "latency", "breach"), [(150.0, 5.0, "disagreement with the primary"),
                                                           (100.0, 80.0, "p99 latency")])
def test_disagreeing_or_slow_canary_is_rolled_back(sqlite_settings: Settings, bundle: Path, output: float,
                                                   latency: float, breach: str) -> None:
    v1, v2 = _canary(sqlite_settings, bundle)
    _traffic(sqlite_settings, v1, v2, canary_errors=0, canary_output=output, canary_latency=latency)
    run = watch_once(sqlite_settings)
    assert run.rolled_back == [MODEL]
    assert breach in Registry(sqlite_settings).events(MODEL)[0].reason


def test_too_few_or_too_old_records_are_not_evidence(sqlite_settings: Settings, bundle: Path) -> None:
    _, v2 = _canary(sqlite_settings, bundle)
    log(sqlite_settings, records(MODEL, v2, "canary", 10, errors=10))  # below min_requests
    old = records(MODEL, v2, "canary", 100, errors=100)
    for r in old:
        r.ts = datetime.now(UTC) - timedelta(hours=2)  # outside the window
    log(sqlite_settings, old)
    run = watch_once(sqlite_settings, WatchRules(window=600), holder="w")
    assert run.rolled_back == [] and run.checked[0].requests == 10
    other = watch_once(sqlite_settings, WatchRules(min_requests=5), holder="other")
    assert not other.leader  # "w" holds the lease for 30 s
    lower = watch_once(sqlite_settings, WatchRules(min_requests=5), holder="w")
    assert lower.rolled_back == [MODEL]


def test_lease_lets_one_watcher_act_and_passes_on(any_settings: Settings) -> None:
    engine = Registry(any_settings).engine
    a, b = SqlLease(engine, "test-lease", holder="a", ttl=30), SqlLease(engine, "test-lease", holder="b", ttl=2.0)
    assert a.acquire() and not b.acquire() and a.acquire()  # a renews, b stands by
    assert b.holder_now() == "a"
    a.release()
    assert b.acquire() and not a.acquire()
    deadline = time.monotonic() + 10  # b stops renewing: its lease runs out and a takes over
    while not a.acquire():
        assert time.monotonic() < deadline, "the expired lease was never taken over"
        time.sleep(0.05)
    assert a.holder_now() == "a"


def test_per_model_watch_rules_in_the_model_settings_override_the_server_rules(sqlite_settings: Settings,
                                                                              bundle: Path) -> None:
    v1, v2 = _canary(sqlite_settings, bundle)
    _traffic(sqlite_settings, v1, v2, canary_errors=8)  # 8%: over the default 5%
    registry = Registry(sqlite_settings)
    assert set_watch_rules(registry, MODEL, {"max_error_rate": 0.10}) == {"max_error_rate": 0.10}
    assert registry.model_settings(MODEL)["rollout"]["watch_rules"] == {"max_error_rate": 0.10}
    tolerated = watch_once(sqlite_settings, holder="w")
    assert tolerated.rolled_back == [] and tolerated.checked[0].error_rate == pytest.approx(0.08)
    assert set_watch_rules(registry, MODEL, {"max_error_rate": None}) == {}  # back to the server's rules
    strict = watch_once(sqlite_settings, holder="w")
    assert strict.rolled_back == [MODEL]
    assert Registry(sqlite_settings).events(MODEL)[0].details["rules"]["max_error_rate"] == 0.05


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    ready = sel.select(timeout)
    sel.close()
    assert ready, f"no output from watcher {proc.pid} within {timeout}s"
    return proc.stdout.readline()  # type: ignore[union-attr]


@pytest.mark.postgres
def test_two_watcher_processes_on_one_postgres_roll_back_once(pg_settings: Settings, bundle: Path) -> None:
    v1, v2 = _canary(pg_settings, bundle)
    env = cli_env(pg_settings, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "modelyard", "watch", "--interval", "0.05", "--max-runs", "600"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        first = [_readline(p, 60) for p in procs]
        assert sorted(line.split()[2] for line in first) == ["leader", "standby"], first
        _traffic(pg_settings, v1, v2, canary_errors=30)
        registry = Registry(pg_settings)
        deadline = time.monotonic() + 60
        while not any(e.kind == "rollback" for e in registry.events(MODEL)):
            assert time.monotonic() < deadline, "no rollback within 60 s"
            time.sleep(0.1)
        outputs = {p.pid: [_readline(p, 30) for _ in range(10)] for p in procs}  # both keep running
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert [e.kind for e in registry.events(MODEL)].count("rollback") == 1
    assert registry.aliases(MODEL)["canary"].weight == 0.0
    acted = [pid for pid, lines in outputs.items() if any("rolled back" in ln for ln in lines)]
    assert len(acted) <= 1

"""The monitor loop a server runs: drift and alert rules for every served version, gauges, notifications.

One replica evaluates at a time: the loop holds a lease in ``my_leases`` (renewed each run, taken over when
it expires or is released at shutdown), so replicas and workers do not record or notify the same alert
twice. A process that finds the lease held elsewhere skips the run and stops exporting drift gauges of its
own (single-process mode; in prometheus_client's multiprocess mode a sibling worker may hold the lease and
its values win as the most recent ones).

Wiring, in the server (which may import the prediction log; the monitor may not): see ``serve/monitoring.py``::

    scheduler = MonitorScheduler(registry, predlog.window_source(registry.engine),
        notifier=WebhookNotifier(url), psi_gauge=metrics.DRIFT_PSI, ks_gauge=metrics.DRIFT_KS)
    task = asyncio.create_task(scheduler.run_forever(stop_event))
    ...
    scheduler.release()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from modelyard.monitor import metrics
from modelyard.monitor.alert_state import AlertBook, Transition
from modelyard.monitor.alerts import Finding, evaluate_rules, load_overrides, rules_for
from modelyard.monitor.drift import DriftReport, evaluate_drift
from modelyard.monitor.notify import Notifier
from modelyard.monitor.window import RecordSource, Window, split_windows
from modelyard.registry import Registry
from modelyard.registry import tables as t

log = logging.getLogger("modelyard.monitor")
LEASE = "modelyard-monitor"


@dataclass
class VersionStatus:
    """One version over one window: its traffic, its drift (None without traffic), every rule's verdict."""

    window: Window
    drift: DriftReport | None
    findings: list[Finding]


@dataclass
class MonitorRun:
    at: datetime
    reports: dict[tuple[str, int], DriftReport | None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


class MonitorScheduler:
    """Call ``run_once()`` (tests, cron) or ``await run_forever(stop)`` (the server) every ``interval`` s.

    ``psi_gauge`` / ``ks_gauge`` are prometheus_client gauges labelled (model, version, feature), e.g.
    ``modelyard_drift_psi``; ``served`` returns model → versions to watch (default: every alias's version).
    """

    def __init__(
        self,
        registry: Registry,
        records: RecordSource,
        *,
        window: timedelta = timedelta(hours=1),
        interval: float = 60.0,
        notifier: Notifier | None = None,
        psi_gauge: Any = None,
        ks_gauge: Any = None,
        served: Callable[[], dict[str, set[int]]] | None = None,
        lease: bool = True,
        holder: str | None = None,
    ) -> None:
        self.registry = registry
        self.records = records
        self.window = window
        self.interval = interval
        self.notifier = notifier
        self.psi_gauge = psi_gauge
        self.ks_gauge = ks_gauge
        self.served = served or self._served_by_alias
        self.lease = lease
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.book = AlertBook(registry.engine)
        self.latest: dict[tuple[str, int], DriftReport | None] = {}
        self.last_run: MonitorRun | None = None
        self._leading: bool | None = None
        self._manifests: dict[tuple[str, int], dict[str, Any]] = {}
        self._gauge_labels: set[tuple[Any, tuple[str, str, str]]] = set()

    def _served_by_alias(self) -> dict[str, set[int]]:
        return {
            m: {a.version for a in aliases.values()} for m, aliases in self.registry.all_aliases().items()
        }

    def _manifest(self, model: str, version: int) -> dict[str, Any]:
        key = (model, version)
        if key not in self._manifests:  # versions are immutable: one read per process
            self._manifests[key] = self.registry.get_version(model, version).manifest
        return self._manifests[key]

    def evaluate(self, model: str, versions: set[int], now: datetime) -> list[VersionStatus]:
        """Traffic, drift and rule findings for the given versions of one model, window ending at ``now``."""
        since = now - self.window
        windows = split_windows(self.records(model, since, now), model, since, now)
        overrides = load_overrides(self.registry.engine, model)
        out = []
        for version in sorted(versions):
            manifest = self._manifest(model, version)
            window = windows.get(version) or Window(model, version, since, now)
            drift = evaluate_drift(manifest, window) if window.rows else None
            out.append(
                VersionStatus(window, drift, evaluate_rules(rules_for(manifest, overrides), window, drift))
            )
        return out

    def run_once(self, now: datetime | None = None) -> MonitorRun:
        now = now or datetime.now(UTC)
        run = MonitorRun(at=now)
        leading = not self.lease or acquire_lease(
            self.registry.engine, LEASE, self.holder, timedelta(seconds=max(3 * self.interval, 30)), now
        )
        if leading != self._leading:
            log.info("monitor: %s", "this process evaluates (it holds the lease)" if leading else
                     "another process holds the monitor lease; this one skips its runs")
            self._leading = leading
        if not leading:
            run.skipped = "another replica holds the monitor lease"
            if not metrics.multiprocess_enabled():
                self._set_gauges({})  # the holder exports them: stale values here would keep alerts firing
            self.last_run = run
            return run
        served = self.served()
        for model, versions in sorted(served.items()):
            try:
                statuses = self.evaluate(model, versions, now)
            except Exception as exc:  # one broken model must not stop the others being watched
                log.exception("monitor: evaluating %s failed", model)
                run.errors[model] = f"{type(exc).__name__}: {exc}"
                continue
            for st in statuses:
                run.reports[(model, st.window.version)] = st.drift
                run.findings += st.findings
        self.latest = dict(run.reports)
        self._set_gauges(run.reports)
        retry = self.book.undelivered() if self.notifier else []
        run.transitions = self.book.apply(run.findings, now, served=served)
        if self.notifier is not None:
            for tr in [*retry, *run.transitions]:
                ok = self.notifier.notify(tr)
                self.book.mark(int(tr.alert["id"]), tr.status, ok)
                run.delivered += ok
                run.failed += not ok
        self.last_run = run
        return run

    def release(self) -> None:
        """Give the lease up (server shutdown), so another replica takes over at its next run."""
        if self.lease:
            release_lease(self.registry.engine, LEASE, self.holder)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Evaluate every ``interval`` seconds until ``stop`` is set; blocking work runs in a thread."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("monitor run failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def _set_gauges(self, reports: dict[tuple[str, int], DriftReport | None]) -> None:
        """Export this run's drift; drop the series this process exported before and not now."""
        seen: set[tuple[Any, tuple[str, str, str]]] = set()
        for (model, version), report in reports.items():
            for fd in report.all() if report else ():
                labels = (model, str(version), fd.feature)
                for gauge, value in ((self.psi_gauge, fd.psi), (self.ks_gauge, fd.ks)):
                    if gauge is not None and value is not None:
                        gauge.labels(*labels).set(value)
                        seen.add((gauge, labels))
        for gauge, labels in self._gauge_labels - seen:  # versions no longer served, or no longer ours
            metrics.drop_series(gauge, *labels)
        self._gauge_labels = seen


def default_gauges() -> tuple[Any, Any]:
    """``modelyard_drift_psi`` and ``modelyard_drift_ks``, the gauges ``/metrics`` exports."""
    return metrics.DRIFT_PSI, metrics.DRIFT_KS


def release_lease(engine: Engine, name: str, holder: str) -> None:
    """Mark the named lease free if ``holder`` still has it."""
    with engine.begin() as conn:
        conn.execute(
            update(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder).values(active=False)
        )


def acquire_lease(
    engine: Engine, name: str, holder: str, ttl: timedelta, now: datetime | None = None
) -> bool:
    """Take or renew the named lease; False while another holder's lease has not expired."""
    now = now or datetime.now(UTC)
    try:
        with engine.begin() as conn:
            row = conn.execute(select(t.leases).where(t.leases.c.name == name)).mappings().first()
            if row is None:
                conn.execute(
                    insert(t.leases).values(name=name, holder=holder, expires_at=now + ttl, active=True)
                )
                return True
            expires = row["expires_at"] if row["expires_at"].tzinfo else row["expires_at"].replace(tzinfo=UTC)
            if row["holder"] != holder and row["active"] and expires > now:
                return False
            result = conn.execute(
                update(t.leases)
                .where(t.leases.c.name == name)
                .where(t.leases.c.holder == row["holder"])
                .values(holder=holder, expires_at=now + ttl, active=True)
            )
            return bool(result.rowcount)
    except DBIntegrityError:
        return False  # another replica inserted the lease first

"""The monitor inside the server: drift and alert rules on a schedule, gauges, webhook notifications.

Every worker process runs a ``MonitorScheduler`` on ``MODELYARD_MONITOR_INTERVAL`` seconds over the last
``MODELYARD_MONITOR_WINDOW`` of the prediction log; the lease in ``my_leases`` lets exactly one process of
all replicas evaluate, set ``modelyard_drift_psi`` / ``modelyard_drift_ks``, record alerts and send them to
``MODELYARD_ALERT_WEBHOOK``. The others skip their runs. ``MODELYARD_MONITOR_INTERVAL=0`` (or a server
without the prediction log, which has nothing to read) turns the schedule off.

The dashboard asks ``drift()``: the last run's reports when this process made it, else a report computed
here from the log at most once per interval (the lease holder may be another worker or replica).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime

from fastapi import Request

from modelyard.config import Settings
from modelyard.durations import parse_duration
from modelyard.monitor.drift import DriftReport
from modelyard.monitor.notify import WebhookNotifier
from modelyard.monitor.scheduler import MonitorScheduler, default_gauges
from modelyard.predlog import window_source
from modelyard.registry import Registry

log = logging.getLogger("modelyard.serve")
STOP_WAIT = 10.0  # seconds shutdown waits for a run in progress; then the lease is left to expire

DriftMap = dict[tuple[str, int], DriftReport | None]


class ServerMonitor:
    """One server process's monitor scheduler, and the drift reports the dashboard draws."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.window = parse_duration(settings.monitor_window, what="MODELYARD_MONITOR_WINDOW")
        self.window_text = settings.monitor_window
        self.interval = settings.monitor_interval
        self.enabled = self.interval > 0 and settings.prediction_log
        psi, ks = default_gauges()
        notifier = WebhookNotifier(settings.alert_webhook) if settings.alert_webhook else None
        self.scheduler = MonitorScheduler(
            registry, window_source(registry.engine), window=self.window, interval=max(self.interval, 1.0),
            notifier=notifier, psi_gauge=psi, ks_gauge=ks,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cache: tuple[float, DriftMap] | None = None
        self._cache_lock = threading.Lock()

    def start(self) -> None:
        if not self.enabled:
            log.info("monitor schedule off (%s)", "no prediction log" if self.interval > 0 else "interval 0")
            return
        self._task = asyncio.create_task(self.scheduler.run_forever(self._stop), name="modelyard-monitor")
        log.info("monitor: drift and alert rules every %gs over %s%s", self.interval, self.window_text,
                 "" if self.scheduler.notifier is None else ", alerts to the webhook")

    async def stop(self) -> None:
        """Let a run in progress finish (bounded), then give the lease up for the next replica."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=STOP_WAIT)
        except TimeoutError:
            self._task.cancel()
            log.warning("monitor run still busy after %gs at shutdown; its lease will expire", STOP_WAIT)
            return
        try:
            await asyncio.to_thread(self.scheduler.release)
        except Exception as exc:  # the database may be away at shutdown: the lease then simply expires
            log.warning("monitor lease not released: %s", exc)

    def drift(self) -> DriftMap:
        """Drift per served (model, version) for the dashboard; blocking (call it in a thread)."""
        run = self.scheduler.last_run
        fresh = 2 * max(self.interval, 1.0) + 5
        if run is not None and not run.skipped and (datetime.now(UTC) - run.at).total_seconds() < fresh:
            return dict(self.scheduler.latest)
        with self._cache_lock:  # one computation at a time; viewers in between share it
            ttl = self.interval if self.interval > 0 else 60.0
            if self._cache is not None and time.monotonic() - self._cache[0] < ttl:
                return self._cache[1]
            now = datetime.now(UTC)
            reports: DriftMap = {}
            for model, versions in sorted(self.scheduler.served().items()):
                try:
                    for st in self.scheduler.evaluate(model, versions, now):
                        reports[(model, st.window.version)] = st.drift
                except Exception:
                    log.exception("dashboard: drift of %s could not be computed", model)
            self._cache = (time.monotonic(), reports)
            return reports


def server_monitor(request: Request) -> ServerMonitor:
    return request.app.state.modelyard_monitor  # type: ignore[no-any-return]

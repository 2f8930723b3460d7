"""The alert rule set: drift and alert rules for every served version, gauges, recorded alerts, notifications.

Run by the one scheduler (``monitor/scheduler.py``) while it holds the lease, so replicas and workers do not
record or notify the same alert twice. When another process holds the lease, ``standby()`` stops this one
exporting drift gauges of its own (single-process mode; in prometheus_client's multiprocess mode a sibling
worker may hold the lease and its values win as the most recent ones).

The CLI report and the dashboard call ``evaluate`` directly: the same rules, without recording anything.

A rule's config may name an ``action`` (``{"input_drift": {"action": "retrain"}}`` in the model's
``monitor.rules`` settings): when one of its alerts starts firing, the handler registered under that name
(``actions``) is called with the transition, once, by the lease holder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.bundle import Manifest
from modelyard.config import Settings
from modelyard.durations import format_duration, parse_duration
from modelyard.monitor import metrics
from modelyard.monitor.alert_state import AlertBook, Transition
from modelyard.monitor.alerts import DEFAULT_RULES, evaluate_rules, load_overrides, rules_for
from modelyard.monitor.drift import DriftReport, evaluate_drift
from modelyard.monitor.notify import Notifier, WebhookNotifier
from modelyard.monitor.quality import LiveQuality, live_quality
from modelyard.monitor.rules import NO_LEASE, Finding, HeldLease, RuleSetRun
from modelyard.monitor.window import RecordSource, Window, split_windows
from modelyard.predlog import log_reader, window_source
from modelyard.registry import Registry

__all__ = ["Action", "AlertRuleSet", "AlertRun", "VersionStatus", "default_gauges"]

log = logging.getLogger("modelyard.monitor")
Action = Callable[[Transition], None]
"""What an alert rule's ``action`` runs when its alert starts firing (``"retrain"``: the server wires
``rollout.retrain.request_retrain``; monitor does not import rollout)."""


@dataclass
class VersionStatus:
    """One version over one window: its traffic, its drift (None without traffic), every rule's verdict."""

    window: Window
    drift: DriftReport | None
    findings: list[Finding]
    quality: LiveQuality | None = None


@dataclass
class AlertRun(RuleSetRun):
    reports: dict[tuple[str, int], DriftReport | None] = field(default_factory=dict)
    quality: dict[tuple[str, int], LiveQuality | None] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    actions: list[tuple[str, str, str]] = field(default_factory=list)
    """(model, rule, action) of every action a newly firing alert ran."""


class AlertRuleSet:
    """Alert rules over the last ``window`` of the log, every ``every`` seconds.

    ``psi_gauge`` / ``ks_gauge`` are prometheus_client gauges labelled (model, version, feature), e.g.
    ``modelyard_drift_psi``; ``served`` returns model → versions to watch (default: every alias's version).
    """

    name = "alerts"

    def __init__(
        self,
        registry: Registry,
        records: RecordSource,
        *,
        window: timedelta = timedelta(hours=1),
        every: float = 60.0,
        notifier: Notifier | None = None,
        psi_gauge: Any = None,
        ks_gauge: Any = None,
        served: Callable[[], dict[str, set[int]]] | None = None,
        actions: Mapping[str, Action] | None = None,
    ) -> None:
        self.registry = registry
        self.records = records
        self.window = window
        self.every = every
        self.notifier = notifier
        self.psi_gauge = psi_gauge
        self.ks_gauge = ks_gauge
        self.served = served or self._served_by_alias
        self.actions: dict[str, Action] = dict(actions or {})
        self.book = AlertBook(registry.engine)
        self.latest: dict[tuple[str, int], DriftReport | None] = {}
        self.last_run: AlertRun | None = None
        self._manifests: dict[tuple[str, int], Manifest] = {}
        self._gauge_labels: set[tuple[Any, tuple[str, str, str]]] = set()
        self._quality_labels: set[tuple[Any, tuple[str, ...]]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry,
                      actions: Mapping[str, Action] | None = None) -> AlertRuleSet:
        """The server's alert rule set: ``MODELYARD_MONITOR_INTERVAL`` / ``_WINDOW``, the webhook, the gauges."""
        psi, ks = default_gauges()
        return cls(registry, window_source(log_reader(settings, registry.engine)),
                   window=parse_duration(settings.monitor_window, what="MODELYARD_MONITOR_WINDOW"),
                   every=max(settings.monitor_interval, 1.0), psi_gauge=psi, ks_gauge=ks,
                   notifier=WebhookNotifier(settings.alert_webhook) if settings.alert_webhook else None,
                   actions=actions)

    def describe(self) -> str:
        return (f"alerts every {format_duration(self.every)} over {format_duration(self.window)} "
                f"({', '.join(DEFAULT_RULES)}; "
                f"{'notified to the webhook' if self.notifier else 'recorded, no webhook'})")

    def _served_by_alias(self) -> dict[str, set[int]]:
        return {
            m: {a.version for a in aliases.values()} for m, aliases in self.registry.all_aliases().items()
        }

    def manifest(self, model: str, version: int) -> Manifest:
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
            manifest = self.manifest(model, version)
            window = windows.get(version) or Window(model, version, since, now)
            drift = evaluate_drift(manifest, window) if window.rows else None
            window.quality = live_quality(self.registry.engine, manifest, model, version, since, now,
                                          window.records)
            out.append(VersionStatus(window, drift,
                                     evaluate_rules(rules_for(manifest, overrides), window, drift),
                                     window.quality))
        return out

    def run(self, now: datetime | None = None, lease: HeldLease = NO_LEASE) -> AlertRun:
        """Evaluate every served version, record what changed and notify it (retrying undelivered ones)."""
        now = now or datetime.now(UTC)
        run = AlertRun(at=now)
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
                run.quality[(model, st.window.version)] = st.quality
                run.findings += st.findings
        self.latest = dict(run.reports)
        self._set_gauges(run.reports)
        self._set_quality_gauges(run.quality)
        retry = self.book.undelivered() if self.notifier else []
        run.transitions = self.book.apply(run.findings, now, served=served)
        if self.notifier is not None:
            for tr in [*retry, *run.transitions]:
                ok = self.notifier.notify(tr)
                self.book.mark(int(tr.alert["id"]), tr.status, ok)
                run.delivered += ok
                run.failed += not ok
        for tr in run.transitions:
            if tr.status == "firing":
                self._act(tr, lease, run)
        self.last_run = run
        return run

    def action_of(self, alert: Mapping[str, Any]) -> str | None:
        """The ``action`` the alert's rule config names (``{"input_drift": {"action": "retrain"}}``), if any."""
        model, version = str(alert["model"]), int(alert["version"])
        rules = rules_for(self.manifest(model, version), load_overrides(self.registry.engine, model))
        action = (rules.get(str(alert["rule"])) or {}).get("action")
        return None if action is None else str(action)

    def _act(self, transition: Transition, lease: HeldLease, run: AlertRun) -> None:
        """Run the action a newly firing alert's rule names (once: only the lease holder records alerts)."""
        alert = transition.alert
        try:
            action = self.action_of(alert)
            if action is None:
                return
            handler = self.actions.get(action)
            if handler is None:
                log.warning("alert %s of %s names action %r, which this process does not know (known: %s)",
                            alert["rule"], alert["model"], action, ", ".join(sorted(self.actions)) or "none")
                return
            if lease.renew():
                handler(transition)
                run.actions.append((str(alert["model"]), str(alert["rule"]), action))
        except Exception as exc:  # an action that fails must not stop the alerts being recorded
            log.exception("alert action for %s failed", alert.get("model"))
            run.errors[str(alert.get("model"))] = f"action: {type(exc).__name__}: {exc}"

    def standby(self) -> None:
        if not metrics.multiprocess_enabled():
            self._set_gauges({})  # the holder exports them: stale values here would keep alerts firing
            self._set_quality_gauges({})

    def _set_quality_gauges(self, quality: dict[tuple[str, int], LiveQuality | None]) -> None:
        """Export live quality (``modelyard_live_metric``, coverage, delay, labelled rows); drop stale series."""
        seen: set[tuple[Any, tuple[str, ...]]] = set()

        def put(gauge: Any, labels: tuple[str, ...], value: float | None) -> None:
            if value is not None:
                gauge.labels(*labels).set(value)
                seen.add((gauge, labels))

        for (model, version), q in quality.items():
            if q is None:
                continue
            v = str(version)
            for name, value in q.metrics.items():
                put(metrics.LIVE_METRIC, (model, v, name), value)
            if "accuracy" in q.estimated:
                put(metrics.LIVE_METRIC, (model, v, "estimated_accuracy"), q.estimated["accuracy"])
            put(metrics.LABEL_COVERAGE, (model, v), q.coverage)
            put(metrics.LABEL_DELAY, (model, v), q.delay_p50_s)
            put(metrics.LABELLED_ROWS, (model, v), float(q.labelled))
        for gauge, labels in self._quality_labels - seen:
            metrics.drop_series(gauge, *labels)
        self._quality_labels = seen

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

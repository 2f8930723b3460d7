"""Automatic rollback: the canary watcher's rule set, run by the one scheduler (``monitor/scheduler.py``).

For every model whose canary has a weight above 0, ``CanaryRuleSet`` reads the canary's records since
``window`` seconds ago (or since the canary alias last changed, whichever is later) and measures its error
rate, its p99 latency (absolute, and as a ratio to the primary's above an absolute objective), its
disagreement with the primary on requests both answered (canary requests the server mirrored to the
primary, logged on route ``mirror``, or shadow records of the canary's version), and, once outcomes arrive,
whether it is significantly worse than the primary on labelled rows since it went live (``rollout/judge.py``):
a ``CanaryHealth``. The rules (``canary_rules``) read it; when one fires, the canary's weight is set to 0
and a ``rollback`` event records the figures. When none fires, the canary has at least ``min_requests``
requests and has served ``promote_after`` seconds (the rules', or the canary's own from its promote event:
``retrain`` sets it), it is promoted to production (a ``promote`` event by ``watcher:<holder>``) and the
canary alias is retired.

Thresholds: ``WatchRules`` defaults, then the server's ``MODELYARD_WATCH_RULES``, then the model's own
settings (``my_models.settings["rollout"]["watch_rules"]``, set with ``set_watch_rules``), as the alert
rules take the model's ``monitor.rules`` overrides. The latency ratio rule fires only when the canary's p99
is both over ``max_p99_ratio`` times the primary's and over the absolute objective ``latency_p99_ms``
(``WatchRules``, or the model's own ``settings["rollout"]["latency_p99_ms"]``): a candidate without the ONNX
fast path may well be 4x slower than an ONNX primary at 6 ms against 1.6 ms, and still be fast enough.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from modelyard.durations import format_duration
from modelyard.errors import ConfigError
from modelyard.monitor.rules import NO_LEASE, Finding, HeldLease, Rule, RuleSetRun, firing
from modelyard.predlog import Route, latencies, log_reader, pair_by_request, percentile, read_window
from modelyard.registry import AliasRecord, Registry
from modelyard.registry.lease import as_utc
from modelyard.registry.settings import LATENCY_OBJECTIVE, latency_objective
from modelyard.rollout.judge import compare_on_outcomes
from modelyard.rollout.policy import CANARY, PRODUCTION

__all__ = ["CanaryHealth", "CanaryRuleSet", "WatchRules", "WatchRun", "canary_rules", "disagreement",
           "latency_verdict", "set_watch_rules", "watch_rules"]

log = logging.getLogger(__name__)
MAX_RECORDS = 50_000
SETTINGS_KEY = "watch_rules"  # in the model's "rollout" settings section


@dataclass(frozen=True)
class WatchRules:
    """Thresholds of the automatic rollback; ``None`` turns a rule off."""

    window: float = 300.0
    min_requests: int = 20
    """Fewer canary requests than this in the window: too little evidence to act."""
    max_error_rate: float | None = 0.05
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = 3.0
    """Canary p99 latency over the primary's p99 in the same window (only above ``latency_p99_ms``)."""
    latency_p99_ms: float | None = 20.0
    """The absolute p99 objective (ms) the ratio rule also needs crossed; a model's own
    ``settings["rollout"]["latency_p99_ms"]`` replaces it; None: the ratio alone decides."""
    max_disagreement: float | None = 0.10
    disagreement_rel_tol: float = 0.05
    """A regression row disagrees when the two answers differ by more than this, relatively."""
    min_pairs: int = 20
    outcome_alpha: float | None = 0.01
    """Roll back when the canary is worse on labelled live traffic with a one-sided p-value under this
    (``rollout.judge``: paired Wilcoxon / McNemar where both versions saw the rows, else Mann-Whitney / Welch)."""
    min_labelled: int = 30
    """Fewer labelled rows (or pairs) than this: the outcome test says nothing."""
    promote_after: float | None = None
    """Seconds a canary must have served, healthy, before the watcher promotes it to production; None: the
    watcher only rolls back. A canary put there by ``retrain`` carries its own (``promote_after`` in its
    promote event's details), which wins."""


def watch_rules(overrides: Mapping[str, Any], base: WatchRules | None = None, *,
                what: str = "MODELYARD_WATCH_RULES") -> WatchRules:
    """``base`` (default ``WatchRules()``) with ``overrides`` applied; an unknown name is a configuration error."""
    known = {f.name for f in dataclasses.fields(WatchRules)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown rule {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values = {k: (int(v) if k in ("min_requests", "min_pairs", "min_labelled") and v is not None else v)
              for k, v in overrides.items()}
    return dataclasses.replace(base or WatchRules(), **values)


def set_watch_rules(registry: Registry, model: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Store per-model watcher thresholds (validated) in the model's settings; ``None`` drops one."""
    watch_rules({k: v for k, v in overrides.items() if v is not None}, what=f"watch rules of {model}")
    current = dict(registry.model_settings(model).get("rollout", {}).get(SETTINGS_KEY) or {})
    current.update(overrides)
    merged = {k: v for k, v in current.items() if v is not None}
    return dict(registry.update_model_settings(model, "rollout", {SETTINGS_KEY: merged or None})
                .get(SETTINGS_KEY) or {})


@dataclass
class CanaryHealth:
    """The canary's figures over its window: what the canary rules read."""

    model: str
    canary_version: int
    primary_version: int | None
    weight: float
    since: str
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    primary_p99_ms: float | None = None
    compared_rows: int = 0
    disagreement: float | None = None
    outcomes: dict[str, Any] | None = None
    """The outcome test since the canary went live (``rollout.judge.OutcomeComparison``)."""
    breaches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WatchRun(RuleSetRun):
    leader: bool = True
    checked: list[CanaryHealth] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)


def disagreement(pairs: list[tuple[Any, Any]], task: str, rel_tol: float) -> float:
    """Share of row pairs (primary, canary) whose answers differ (beyond ``rel_tol`` for numbers)."""
    if task == "classification":
        return float(np.mean([str(a) != str(b) for a, b in pairs]))
    a = np.asarray([p[0] for p in pairs], dtype="float64")
    b = np.asarray([p[1] for p in pairs], dtype="float64")
    floor = max(1e-3 * float(np.nanmean(np.abs(a))), 1e-12)
    differs = ~(np.abs(b - a) <= rel_tol * np.maximum(np.abs(a), floor))  # NaN on either side counts
    return float(np.mean(differs))


# ---- the rules: each reads a CanaryHealth and gives one Finding ----------------------------------------
def _finding(h: CanaryHealth, rule: str, fires: bool | None, value: float | None, limit: float | None,
             message: str) -> list[Finding]:
    return [Finding(h.model, h.canary_version, rule, fires, value, limit, message, severity="critical")]


@dataclass(frozen=True)
class ErrorRateRule:
    limit: float
    name: str = "canary_error_rate"

    def evaluate(self, h: CanaryHealth) -> list[Finding]:
        rate = h.error_rate
        fires = None if rate is None else rate > self.limit
        return _finding(h, self.name, fires, rate, self.limit, f"error rate {rate or 0:.1%} > {self.limit:.1%}")


@dataclass(frozen=True)
class P99Rule:
    limit_ms: float
    name: str = "canary_p99"

    def evaluate(self, h: CanaryHealth) -> list[Finding]:
        p99 = h.p99_ms
        fires = None if p99 is None else p99 > self.limit_ms
        return _finding(h, self.name, fires, p99, self.limit_ms,
                        f"p99 latency {p99 or 0:.1f} ms > {self.limit_ms:g} ms")


@dataclass(frozen=True)
class P99RatioRule:
    """Fires when the canary's p99 is over ``ratio`` times the primary's AND over ``objective_ms``."""

    ratio: float
    objective_ms: float | None = None
    name: str = "canary_p99_ratio"

    def evaluate(self, h: CanaryHealth) -> list[Finding]:
        p99, base = h.p99_ms, h.primary_p99_ms
        over_ratio = None if p99 is None or not base else p99 > self.ratio * base
        objective = self.objective_ms
        fires = over_ratio
        if over_ratio and p99 is not None and objective is not None:
            fires = p99 > objective  # over the ratio: the objective decides
        limit = None if not base else max(self.ratio * base, objective or 0.0)
        within = over_ratio is False
        message = (f"p99 latency {p99 or 0:.1f} ms {'within' if within else '>'} {self.ratio:g}x the primary's "
                   f"{base or 0:.1f} ms")
        if objective is not None and not within:
            message += (f" but within the {objective:g} ms objective" if p99 is not None and p99 <= objective
                        else f" and > the {objective:g} ms objective")
        return _finding(h, self.name, fires, p99, limit, message)


@dataclass(frozen=True)
class DisagreementRule:
    limit: float
    name: str = "canary_disagreement"

    def evaluate(self, h: CanaryHealth) -> list[Finding]:
        d = h.disagreement
        fires = None if d is None else d > self.limit
        return _finding(h, self.name, fires, d, self.limit,
                        f"disagreement with the primary {d or 0:.1%} > {self.limit:.1%}")


@dataclass(frozen=True)
class OutcomeRule:
    alpha: float
    name: str = "canary_outcomes"

    def evaluate(self, h: CanaryHealth) -> list[Finding]:
        test = h.outcomes or {}
        worse = test.get("worse")
        p = test.get("p_value")
        message = (f"worse than the primary on labelled traffic: {test.get('test')} p={p:.3g} < {self.alpha:g}, "
                   f"{test.get('loss')} {test.get('canary_loss'):.4g} vs {test.get('primary_loss'):.4g}"
                   if worse else "not significantly worse on labelled traffic" if worse is not None
                   else "too few labelled rows for the outcome test")
        return _finding(h, self.name, worse, p, self.alpha, message)


def canary_rules(rules: WatchRules) -> list[Rule[CanaryHealth]]:
    """The rules ``rules`` switches on, in the order their breaches are reported."""
    out: list[Rule[CanaryHealth]] = []
    if rules.max_error_rate is not None:
        out.append(ErrorRateRule(rules.max_error_rate))
    if rules.max_p99_ms is not None:
        out.append(P99Rule(rules.max_p99_ms))
    if rules.max_p99_ratio is not None:
        out.append(P99RatioRule(rules.max_p99_ratio, rules.latency_p99_ms))
    if rules.max_disagreement is not None:
        out.append(DisagreementRule(rules.max_disagreement))
    if rules.outcome_alpha is not None:
        out.append(OutcomeRule(rules.outcome_alpha))
    return out


def latency_verdict(rules: WatchRules, model: str, candidate_p99_ms: float, primary_p99_ms: float,
                    candidate: int = 0, primary: int | None = None) -> Finding | None:
    """What the latency ratio rule would say of a canary this fast next to this primary (``check`` asks it
    beforehand, with benchmark latencies); None when the rule is off."""
    if rules.max_p99_ratio is None:
        return None
    health = CanaryHealth(model, candidate, primary, 0.0, "benchmark", p99_ms=candidate_p99_ms,
                          primary_p99_ms=primary_p99_ms)
    (finding,) = P99RatioRule(rules.max_p99_ratio, rules.latency_p99_ms).evaluate(health)
    return finding



class CanaryRuleSet:
    """The canary rules over every live canary; a firing one rolls the canary back (``name`` "canary")."""

    name = "canary"

    def __init__(self, registry: Registry, rules: WatchRules | None = None, *, every: float = 5.0,
                 models: list[str] | None = None) -> None:
        self.registry = registry
        self.rules = rules or WatchRules()
        self.every = every
        self.models = models
        self._tasks: dict[tuple[str, int], str] = {}

    def describe(self) -> str:
        r = self.rules
        on = [f"error rate > {r.max_error_rate:.1%}" if r.max_error_rate is not None else "",
              f"p99 > {r.max_p99_ms:g} ms" if r.max_p99_ms is not None else "",
              (f"p99 > {r.max_p99_ratio:g}x the primary's"
               + (f" and > {r.latency_p99_ms:g} ms" if r.latency_p99_ms is not None else ""))
              if r.max_p99_ratio is not None else "",
              f"disagreement > {r.max_disagreement:.1%}" if r.max_disagreement is not None else "",
              f"worse on outcomes at p < {r.outcome_alpha:g} (at least {r.min_labelled} labelled rows)"
              if r.outcome_alpha is not None else ""]
        return (f"canary rollback every {format_duration(self.every)} over {format_duration(r.window)} "
                f"({', '.join(x for x in on if x) or 'no rule on'}; at least {r.min_requests} requests; "
                "per-model overrides from the model's settings)")

    def rules_for(self, model: str, settings: Mapping[str, Any] | None = None) -> WatchRules:
        """The thresholds for ``model``: this rule set's, then the model's own settings (its watch rules and
        its latency objective)."""
        own = dict(((settings or {}).get("rollout") or {}).get(SETTINGS_KEY) or {})
        objective = latency_objective(dict(settings or {}))
        if objective is not None:
            own[LATENCY_OBJECTIVE] = objective
        return watch_rules(own, self.rules, what=f"watch rules of {model}") if own else self.rules

    def overrides(self) -> list[str]:
        """One start-up log line per model whose own settings change the canary rules."""
        lines = []
        for name, settings in sorted(self.registry.all_model_settings().items()):
            try:
                rules = self.rules_for(name, settings)
            except Exception as exc:
                lines.append(f"canary rollback rules of {name}: unreadable model settings ({exc})")
                continue
            if rules != self.rules:
                changed = ", ".join(f"{k}={v}" for k, v in asdict(rules).items() if v != getattr(self.rules, k))
                lines.append(f"canary rollback rules of {name} (model settings): {changed}")
        return lines

    def _task(self, name: str, version: int) -> str:
        if (name, version) not in self._tasks:
            self._tasks[(name, version)] = self.registry.get_version(name, version).manifest.task
        return self._tasks[(name, version)]

    def measure(self, name: str, aliases: Mapping[str, AliasRecord], rules: WatchRules,
                now: datetime | None = None) -> CanaryHealth | None:
        """The canary's figures over the window; None without a live canary."""
        canary = aliases.get(CANARY)
        if canary is None or not canary.weight:
            return None
        now = now or datetime.now(UTC)
        since = max(now - timedelta(seconds=rules.window), as_utc(canary.updated_at))
        primary = aliases.get(PRODUCTION)
        health = CanaryHealth(name, canary.version, primary.version if primary else None,
                              float(canary.weight), since.isoformat())
        source = log_reader(self.registry.settings, self.registry.engine)
        own = read_window(source, name, since=since, routes=(Route.CANARY, Route.SHADOW), version=canary.version,
                          limit=MAX_RECORDS)  # the canary's answers, and its shadow records if it is shadowed
        base = read_window(source, name, since=since, routes=(Route.PRIMARY, Route.MIRROR), limit=MAX_RECORDS)
        records = own.on(Route.CANARY)
        health.requests = len(records)
        if rules.outcome_alpha is not None:  # outcomes come late: every labelled row since the canary went live
            health.outcomes = compare_on_outcomes(
                self.registry.engine, name, self._task(name, canary.version), canary.version, health.primary_version,
                since=as_utc(canary.updated_at), alpha=rules.outcome_alpha, min_rows=rules.min_labelled).to_dict()
        if health.requests < rules.min_requests:
            return health
        health.errors = sum(r.error is not None for r in records)
        health.error_rate = health.errors / health.requests
        primaries = base.on(Route.PRIMARY)
        health.p99_ms = percentile(latencies(records), 0.99)
        health.primary_p99_ms = percentile(latencies(primaries), 0.99)
        paired = pair_by_request(base.records, own.records)
        health.compared_rows = len(paired)
        if len(paired) >= rules.min_pairs:
            health.disagreement = disagreement(paired.rows, self._task(name, canary.version),
                                               rules.disagreement_rel_tol)
        return health

    def evaluate(self, name: str, aliases: Mapping[str, AliasRecord], now: datetime | None = None,
                 settings: Mapping[str, Any] | None = None) -> tuple[CanaryHealth | None, list[Finding]]:
        """Measure the canary and run its rules; ``health.breaches`` holds the firing rules' messages."""
        rules = self.rules_for(name, settings)
        health = self.measure(name, aliases, rules, now)
        if health is None:
            return None, []
        findings = [f for rule in canary_rules(rules) for f in rule.evaluate(health)]
        health.breaches = [f.message for f in firing(findings)]
        return health, findings

    def run(self, now: datetime | None = None, lease: HeldLease = NO_LEASE) -> WatchRun:
        """One pass over every live canary. Never raises on a bad model."""
        run = WatchRun(at=now or datetime.now(UTC))
        settings = self.registry.all_model_settings()
        for name, aliases in sorted(self.registry.all_aliases().items()):
            if self.models is not None and name not in self.models:
                continue
            try:
                health, findings = self.evaluate(name, aliases, now, settings.get(name))
            except Exception as exc:  # one model's bad record must not stop the others being watched
                log.exception("canary watcher: cannot evaluate %s", name)
                run.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            if health is None:
                continue
            run.checked.append(health)
            run.findings += findings
            rules = self.rules_for(name, settings.get(name))
            if health.breaches and self._roll_back(health, rules, lease):
                log.warning("canary watcher rolled back %s v%d: %s", health.model, health.canary_version,
                            "; ".join(health.breaches))
                run.rolled_back.append(name)
            elif not health.breaches and self._promote(health, aliases, rules, run.at, lease):
                log.info("canary watcher promoted %s v%d to production", health.model, health.canary_version)
                run.promoted.append(name)
        return run

    def promote_after(self, name: str, canary: AliasRecord, rules: WatchRules) -> float | None:
        """Seconds of health before promotion: the canary's own (set by whoever made it canary), else the rules'."""
        for e in self.registry.events(name, limit=200):
            if e.alias == CANARY and e.to_version == canary.version and e.kind == "promote":
                own = (e.details or {}).get("promote_after")
                return float(own) if own is not None else rules.promote_after
        return rules.promote_after

    def _promote(self, health: CanaryHealth, aliases: Mapping[str, AliasRecord], rules: WatchRules,
                 now: datetime, lease: HeldLease) -> bool:
        """Promote a healthy canary that has served long enough, with enough requests to judge it."""
        canary = aliases.get(CANARY)
        if canary is None or health.error_rate is None:  # too few requests to say it is healthy
            return False
        after = self.promote_after(health.model, canary, rules)
        served = (now - as_utc(canary.updated_at)).total_seconds()
        if after is None or served < after:
            return False
        current = self.registry.aliases(health.model).get(CANARY)  # re-read: act on what is live now
        if current is None or not current.weight or current.version != health.canary_version:
            return False
        if not lease.renew():
            return False
        actor = f"watcher:{lease.holder}"
        self.registry.set_alias(
            health.model, PRODUCTION, health.canary_version, kind="promote", actor=actor,
            reason=f"canary v{health.canary_version} healthy for {format_duration(served)} over "
                   f"{health.requests} requests (error rate {health.error_rate:.1%}): promoted by the watcher",
            details={**health.to_dict(), "rules": asdict(rules), "promote_after": after, "watcher": lease.holder})
        self.registry.remove_alias(health.model, CANARY, actor=actor,
                                   reason=f"v{health.canary_version} was promoted to production")
        return True

    def standby(self) -> None:
        """Nothing to drop: the canary rules export nothing."""

    def _roll_back(self, health: CanaryHealth, rules: WatchRules, lease: HeldLease) -> bool:
        current = self.registry.aliases(health.model).get(CANARY)  # re-read: act on what is live now
        if current is None or not current.weight or current.version != health.canary_version:
            return False
        if not lease.renew():  # lost it (a long pause): let the new holder decide
            return False
        details = {**health.to_dict(), "rules": asdict(rules), "watcher": lease.holder}
        self.registry.set_alias(health.model, CANARY, health.canary_version, weight=0.0, kind="rollback",
                                actor=f"watcher:{lease.holder}",
                                reason="automatic canary rollback: " + "; ".join(health.breaches),
                                details=details)
        return True

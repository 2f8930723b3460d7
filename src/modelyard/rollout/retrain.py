"""Retraining on a trigger: re-run a model's spec over a moving window, and take the candidate through the
gates, a canary and the watcher, each step an event with who (the trigger) and why.

The loop, for one model::

    retrain_started ─▶ fit (budget) ─▶ publish + candidate ─▶ check (gates vs production)
        │ train_aborted / retrain_failed      │ promote_refused: the candidate never serves
        ▼                                     ▼ promote to canary (weight, promote_after)
                                   watcher (rollout/watcher.py): promote to production, or roll back

Triggers: a user (``modelyard retrain NAME``), a schedule (the model's ``rollout.retrain.every``), an
alert whose rule config names ``action = "retrain"`` (the alert rule set calls ``request_retrain``), or
the webhook receiver (``POST /v1/admin/models/{name}/retrain``). Requests and schedules are kept in the
model's settings (``rollout.retrain``), claimed under its row lock, and run by ``RetrainRuleSet`` on the
one scheduler (``monitor/scheduler.py``), so among replicas one process retrains, once per trigger.

The gates live in ``checks`` (a sibling layer this package does not import): callers hand a ``GateFactory``
(``lambda registry, name, version: checks.gate_runner(registry, name, version)``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelyard.durations import format_duration, parse_duration
from modelyard.errors import BadRequestError, BudgetExceededError, GateFailedError, ModelyardError, SpecError
from modelyard.monitor.alert_state import Transition
from modelyard.monitor.alerting import Action
from modelyard.monitor.rules import NO_LEASE, HeldLease, RuleSetRun
from modelyard.pipeline import TrainSpec, load_spec, parse_spec, train
from modelyard.registry import Registry, VersionRecord
from modelyard.registry.settings import ModelSettings, SqlSettingsStore
from modelyard.rollout.policy import CANARY, PRODUCTION
from modelyard.rollout.promote import GateOutcome, promote

__all__ = [
    "GateFactory",
    "RetrainConfig",
    "RetrainResult",
    "RetrainRuleSet",
    "RetrainRun",
    "Trigger",
    "alert_actions",
    "request_retrain",
    "retrain",
    "retrain_config",
    "roll_out",
    "set_retrain_config",
    "spec_for",
]

log = logging.getLogger("modelyard.rollout")
SETTINGS_KEY = "retrain"  # in the model's "rollout" settings section
STALE_RUN = timedelta(hours=2)
"""A claimed retrain not finished after this long is taken for dead (its process crashed) and may run again."""

GateFactory = Callable[[Registry, str, int], Callable[[], GateOutcome]]


@dataclass(frozen=True)
class Trigger:
    """Who asked for a retrain (recorded as the events' actor) and why (their reason)."""

    actor: str
    reason: str

    @classmethod
    def schedule(cls, every: float) -> Trigger:
        return cls(f"schedule:{format_duration(every)}", f"scheduled retrain (every {format_duration(every)})")

    @classmethod
    def alert(cls, alert: Mapping[str, Any]) -> Trigger:
        return cls(f"alert:{alert.get('rule')}", f"alert {alert.get('rule')} on v{alert.get('version')}: "
                                                 f"{alert.get('message') or ''}".rstrip(": "))


@dataclass(frozen=True)
class RetrainConfig:
    """A model's retrain settings (``settings["rollout"]["retrain"]``)."""

    every: float | None = None
    """Seconds between scheduled retrains; None: only on a trigger."""
    window: str | None = None
    """The moving window (``30d``) a windowed ``[data] query`` reads; None: the spec's own ``[data] window``."""
    canary_weight: float = 0.1
    promote_after: float = 600.0
    """Seconds the canary must serve, healthy, before the watcher promotes it."""
    spec: str | None = None
    """A spec file to train from; None: the spec in the lineage of the production version."""

    def __post_init__(self) -> None:
        if not 0.0 < self.canary_weight <= 1.0:
            raise BadRequestError(f"retrain canary_weight {self.canary_weight} is not in (0, 1]",
                                  field="canary_weight")
        if self.window is not None:
            parse_duration(self.window, what="retrain window")
        if self.every is not None and self.every <= 0:
            raise BadRequestError(f"retrain every {self.every} must be above 0 seconds", field="every")
        if self.promote_after < 0:
            raise BadRequestError("retrain promote_after must not be negative", field="promote_after")


_CONFIG_FIELDS = {f.name for f in fields(RetrainConfig)}


def retrain_config(settings: Mapping[str, Any] | None) -> RetrainConfig:
    """The model's retrain settings from its settings (``{"rollout": {"retrain": {...}}}``), defaults otherwise."""
    own = ((settings or {}).get("rollout") or {}).get(SETTINGS_KEY) or {}
    values = {k: v for k, v in own.items() if k in _CONFIG_FIELDS}
    if values.get("every") is not None:
        values["every"] = parse_duration(values["every"], what="retrain every").total_seconds()
    if values.get("promote_after") is not None:
        values["promote_after"] = parse_duration(values["promote_after"], what="retrain promote_after") \
            .total_seconds()
    return RetrainConfig(**values)


def set_retrain_config(registry: Registry, name: str, **values: Any) -> RetrainConfig:
    """Store retrain settings for ``name`` (validated; a ``None`` drops a key) under its row lock."""
    unknown = sorted(set(values) - _CONFIG_FIELDS)
    if unknown:
        raise BadRequestError(f"unknown retrain setting {unknown[0]!r} (known: {', '.join(sorted(_CONFIG_FIELDS))})")

    def change(settings: ModelSettings) -> RetrainConfig:
        part = settings.setdefault("rollout", {}).setdefault(SETTINGS_KEY, {})
        for key, value in values.items():
            if value is None:
                part.pop(key, None)
            else:
                part[key] = value
        return retrain_config(settings)  # raises before the change is stored when a value is invalid

    return SqlSettingsStore(registry.engine).change(name, change)


@dataclass
class RetrainResult:
    """What one retrain did. ``outcome``: canary, production (no production to compare with), refused (a
    gate failed), aborted (over the budget), failed (the fit or the data failed), skipped (a canary is live)."""

    model: str
    trigger: Trigger
    outcome: str
    version: int | None = None
    against: int | None = None
    reasons: list[str] = field(default_factory=list)
    window: dict[str, Any] | None = None
    data_sha256: str | None = None
    training_cost: dict[str, Any] | None = None
    gates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_for(registry: Registry, name: str, spec_path: str | Path | None = None) -> tuple[TrainSpec, str]:
    """The spec to retrain ``name`` from, and where it came from: ``spec_path``, else the lineage of the
    production version."""
    if spec_path is not None:
        return load_spec(spec_path), str(spec_path)
    record: VersionRecord = registry.resolve(f"{name}@{PRODUCTION}")
    lineage = record.manifest.lineage
    if lineage.spec is None:
        raise SpecError(f"{name} v{record.version} (production) was not trained from a spec "
                        f"({lineage.source or 'unknown source'}): give the spec with --spec")
    base_dir = Path(lineage.spec_dir) if lineage.spec_dir else None
    spec = parse_spec(lineage.spec, base_dir=base_dir, origin=f"{name} v{record.version} manifest")
    if spec.name != name:
        spec = spec.model_copy(update={"name": name})
    return spec, f"lineage of v{record.version}"


def retrain(registry: Registry, name: str, *, gates: GateFactory, trigger: Trigger,
            config: RetrainConfig | None = None, spec_path: str | Path | None = None,
            window: str | None = None, now: datetime | None = None) -> RetrainResult:
    """Fit ``name``'s spec over the window ending ``now``, publish the candidate, gate it against
    production and, if it passes, make it the canary (or production, when there is none yet).

    Never raises because the candidate is bad: the result (and the events) say what happened."""
    known = name in registry.models()  # a first version may come from --spec
    config = config or retrain_config(registry.model_settings(name) if known else None)
    now = now or datetime.now(UTC)
    aliases = registry.aliases(name) if known else {}
    production, canary = aliases.get(PRODUCTION), aliases.get(CANARY)
    result = RetrainResult(name, trigger, "skipped", against=production.version if production else None)
    actor = trigger.actor
    if canary is not None and canary.weight:
        result.reasons = [f"canary v{canary.version} is live: it is judged before another candidate"]
        registry.record_event(name, "retrain_skipped", actor=actor, reason=result.reasons[0],
                              details={"trigger": trigger.reason})
        return result
    spec, source = spec_for(registry, name, spec_path or config.spec)
    length = window or config.window
    registry.record_event(name, "retrain_started", actor=actor, reason=trigger.reason,
                          details={"spec": source, "window": length, "production": result.against},
                          create=True)
    try:
        trained = train(spec, window=length, now=now)
    except BudgetExceededError as exc:
        result.outcome, result.reasons = "aborted", [exc.message]
        registry.record_event(name, "train_aborted", actor=actor, reason=exc.message,
                              details={"trigger": trigger.reason, **exc.context})
        return result
    except ModelyardError as exc:
        result.outcome, result.reasons = "failed", [exc.message]
        registry.record_event(name, "retrain_failed", actor=actor, reason=exc.message,
                              details={"trigger": trigger.reason})
        return result
    result.window = trained.window.model_dump() if trained.window else None
    result.data_sha256 = trained.data.sha256
    result.training_cost = trained.training_cost.model_dump(exclude_none=True) if trained.training_cost else None
    with tempfile.TemporaryDirectory(prefix="modelyard-retrain-") as tmp:
        trained.write_bundle(Path(tmp) / "bundle")
        version = registry.publish(Path(tmp) / "bundle", name=name, actor=actor,
                                   reason=f"retrain candidate: {trigger.reason}")
    result.version = version
    window_text = (f"window {result.window['start']} to {result.window['end']}" if result.window
                   else "the whole data set")
    registry.record_event(name, "candidate", actor=actor, to_version=version,
                          reason=f"v{version} retrained on {len(trained.data.frame)} rows ({window_text}), "
                                 f"data sha256 {trained.data.sha256[:12]}",
                          details={"trigger": trigger.reason, "window": result.window,
                                   "data_sha256": trained.data.sha256, "rows": len(trained.data.frame),
                                   "metrics": trained.metrics, "training_cost": result.training_cost})
    return _gate_and_roll_out(registry, name, version, result, config, gates)


def roll_out(registry: Registry, name: str, version: int, *, gates: GateFactory, trigger: Trigger,
             config: RetrainConfig | None = None) -> RetrainResult:
    """Take a published candidate (retrained, or from ``learn``) through the gates to a canary: a ``check``
    event, then ``promote`` to canary or ``promote_refused``; the watcher decides from there."""
    config = config or retrain_config(registry.model_settings(name))
    production = registry.aliases(name).get(PRODUCTION)
    result = RetrainResult(name, trigger, "skipped", version=version,
                           against=production.version if production else None)
    return _gate_and_roll_out(registry, name, version, result, config, gates)


def _gate_and_roll_out(registry: Registry, name: str, version: int, result: RetrainResult,
                       config: RetrainConfig, gates: GateFactory) -> RetrainResult:
    actor, why = result.trigger.actor, result.trigger.reason
    run_gates = gates(registry, name, version)

    def checked() -> GateOutcome:
        outcome = run_gates()
        result.gates = outcome.summary()
        verdict = "passed" if outcome.passed else "failed: " + "; ".join(outcome.reasons)
        registry.record_event(name, "check", actor=actor, to_version=version,
                              reason=f"gates of v{version} against production {verdict}",
                              details={"trigger": why, **outcome.summary()})
        return outcome

    to, weight = (CANARY, config.canary_weight) if result.against is not None else (PRODUCTION, None)
    try:
        promote(registry, name, version, to=to, weight=weight, gate=checked, actor=actor,
                reason=f"retrained v{version} passed its gates: {to}" + (f" at {weight:g}" if weight else "")
                       + f" ({why})",
                details={"trigger": why, "promote_after": config.promote_after, "retrain": True})
    except GateFailedError as exc:
        result.outcome, result.reasons = "refused", list(exc.reasons)
        return result
    result.outcome = to
    return result


def request_retrain(registry: Registry, name: str, trigger: Trigger, *, now: datetime | None = None) -> bool:
    """Ask the scheduler's retrain rule set to retrain ``name`` (an alert, the webhook). One request waits
    at a time: a second one while the first waits adds nothing. True when this call queued it."""
    now = now or datetime.now(UTC)

    def change(settings: ModelSettings) -> bool:
        part = settings.setdefault("rollout", {}).setdefault(SETTINGS_KEY, {})
        if part.get("pending"):
            return False
        part["pending"] = {"actor": trigger.actor, "reason": trigger.reason, "at": now.isoformat()}
        return True

    queued = SqlSettingsStore(registry.engine).change(name, change)
    if queued:  # several alerts of one drift (one per feature) make one request, and one event
        registry.record_event(name, "retrain_requested", actor=trigger.actor, reason=trigger.reason)
    return queued


def alert_actions(registry: Registry) -> dict[str, Action]:
    """The alert actions this package provides: ``"retrain"`` queues a retrain of the alert's model."""

    def retrain_on_alert(transition: Transition) -> None:
        request_retrain(registry, str(transition.alert["model"]), Trigger.alert(transition.alert))

    return {"retrain": retrain_on_alert}


@dataclass
class RetrainRun(RuleSetRun):
    results: list[RetrainResult] = field(default_factory=list)


def _claim(settings: ModelSettings, now: datetime, holder: str) -> Trigger | None:
    """Under the model's row lock: the trigger due now (a request first, else the schedule), marked running."""
    part = (settings.get("rollout") or {}).get(SETTINGS_KEY)
    if not part:
        return None
    running = part.get("running")
    if running and now - datetime.fromisoformat(running["since"]) < STALE_RUN:
        return None
    config = retrain_config(settings)
    trigger: Trigger | None = None
    if part.get("pending"):
        trigger = Trigger(part["pending"]["actor"], part["pending"]["reason"])
    elif config.every is not None:
        last = part.get("last_started")
        if last is None or (now - datetime.fromisoformat(last)).total_seconds() >= config.every - 1e-3:
            trigger = Trigger.schedule(config.every)
    if trigger is not None:
        part.pop("pending", None)
        part["running"] = {"holder": holder, "since": now.isoformat()}
        part["last_started"] = now.isoformat()
    return trigger


def _finish(settings: ModelSettings, outcome: dict[str, Any]) -> None:
    part = settings.setdefault("rollout", {}).setdefault(SETTINGS_KEY, {})
    part.pop("running", None)
    part["last_result"] = outcome


class RetrainRuleSet:
    """Scheduled and requested retrains of every model with retrain settings (``name`` "retrain").

    Run by the one scheduler while it holds the lease; a retrain is claimed under the model's row lock
    before it starts, so two processes never retrain the same model for the same trigger."""

    name = "retrain"

    def __init__(self, registry: Registry, gates: GateFactory, *, every: float = 10.0,
                 models: list[str] | None = None) -> None:
        self.registry = registry
        self.gates = gates
        self.every = every
        self.models = models
        self.store = SqlSettingsStore(registry.engine)

    def describe(self) -> str:
        return (f"retrain every {format_duration(self.every)}: scheduled (rollout.retrain.every) and requested "
                "(alerts with action = \"retrain\", the webhook) retrains, gated, to canary")

    def run(self, now: datetime | None = None, lease: HeldLease = NO_LEASE) -> RetrainRun:
        now = now or datetime.now(UTC)
        run = RetrainRun(at=now)
        for name, settings in sorted(self.registry.all_model_settings().items()):
            if (self.models is not None and name not in self.models) or \
                    not (settings.get("rollout") or {}).get(SETTINGS_KEY):
                continue
            if not lease.renew():
                break
            try:
                trigger = self.store.change(name, lambda s: _claim(s, now, lease.holder))
            except ModelyardError as exc:
                run.errors[name] = exc.message
                continue
            if trigger is None:
                continue
            outcome: dict[str, Any] = {"at": now.isoformat(), "trigger": trigger.actor}
            try:
                result = retrain(self.registry, name, gates=self.gates, trigger=trigger,
                                 config=retrain_config(settings), now=now)
                run.results.append(result)
                outcome.update(outcome=result.outcome, version=result.version)
            except Exception as exc:  # one model's failure must not stop the others
                log.exception("retrain of %s failed", name)
                run.errors[name] = f"{type(exc).__name__}: {exc}"
                outcome.update(outcome="error", error=run.errors[name])
            finally:
                self.store.change(name, lambda s, done=outcome: _finish(s, done))  # type: ignore[misc]
        return run

    def standby(self) -> None:
        """Nothing exported: the claims live in the database."""


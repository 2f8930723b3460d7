"""Promotion and rollback: alias changes that run the gates first and leave an event with who, when and why.

The gates live in ``modelyard.checks``, a sibling layer this package does not import: callers hand
``promote`` a zero-argument callable returning a report (``checks.gate_runner(...)`` builds one), so the
server, the CLI and tests decide what runs. ``rollback`` reads the model's production history from the
registry's events, so it works from any process and survives restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelyard.errors import BadRequestError, GateFailedError, RolloutError
from modelyard.registry import EventRecord, Registry
from modelyard.rollout.judge import compare_on_outcomes
from modelyard.rollout.policy import CANARY, PRODUCTION, SHADOW

TARGETS = (PRODUCTION, CANARY, SHADOW)
DEFAULT_CANARY_WEIGHT = 0.1
HISTORY_EVENTS = 10_000


class GateOutcome(Protocol):
    """What a gate callable returns (``modelyard.checks.GateReport`` is one)."""

    @property
    def passed(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PromoteResult:
    model: str
    version: int
    alias: str
    from_version: int | None
    weight: float | None
    forced: bool
    details: dict[str, Any] = field(default_factory=dict)


def promote(
    registry: Registry,
    name: str,
    version: int,
    *,
    to: str,
    weight: float | None = None,
    force: bool = False,
    gate: Callable[[], GateOutcome] | None = None,
    actor: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> PromoteResult:
    """Point ``to`` at ``version`` once ``gate`` passed (``force`` skips it, and the event says so).

    A shadow never answers a caller, so it is not gated. Promoting the canary's version to production
    retires the canary alias. A refusal (a failed gate, or a gate that raised) is a ``promote_refused``
    event with the gates' figures or the error. ``details`` are added to the event (``retrain`` records its
    trigger there).
    """
    if to not in TARGETS:
        raise BadRequestError(f"--to must be one of {', '.join(TARGETS)}, not '{to}'", field="to")
    if to == CANARY:
        weight = DEFAULT_CANARY_WEIGHT if weight is None else weight
        if not 0.0 <= weight <= 1.0:
            raise BadRequestError(f"canary weight {weight} is not between 0 and 1", field="weight")
    elif weight is not None:
        raise BadRequestError(f"--weight applies to a canary only, not to {to}", field="weight")
    record = registry.get_version(name, version)
    aliases = registry.aliases(name)
    current = aliases.get(to)
    details = {**(details or {}), "forced": force}
    if to == PRODUCTION and not force:
        _judge_on_outcomes(registry, name, version, record.manifest.task, aliases, details, actor)
    if force:
        details["gates"] = "skipped (--force)"
    elif to == SHADOW:
        details["gates"] = "not run: a shadow never answers a caller"
    elif gate is None:
        details["gates"] = "none given"
    else:
        try:
            outcome = gate()
        except Exception as exc:  # the candidate raised during the gates: refused, and the event says why
            error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            registry.record_event(name, "promote_refused", actor=actor, alias=to,
                                  reason=f"the gates could not run: {error}",
                                  details={"version": version, "gates": "raised", "error": error})
            raise
        details["gates"] = outcome.summary()
        if not outcome.passed:
            why = "; ".join(outcome.reasons)
            registry.record_event(name, "promote_refused", actor=actor, alias=to, reason=why, to_version=version,
                                  details={**details, "version": version})
            raise GateFailedError(f"{name} v{version} was not promoted to {to}: {why}",
                                  reasons=outcome.reasons, model=name)
    why = reason or f"promote v{version} to {to}" + (" (forced, gates skipped)" if force else "")
    registry.set_alias(name, to, version, weight=weight, actor=actor, reason=why, kind="promote",
                       details=details)
    if to == PRODUCTION:
        canary = registry.aliases(name).get(CANARY)
        if canary is not None and canary.version == version:
            registry.remove_alias(name, CANARY, actor=actor, reason=f"v{version} was promoted to production")
            details["canary_retired"] = True
    return PromoteResult(name, version, to, current.version if current else None, weight, force, details)


def _judge_on_outcomes(registry: Registry, name: str, version: int, task: str, aliases: dict[str, Any],
                       details: dict[str, Any], actor: str | None) -> None:
    """Promoting the live canary's (or shadow's) version to production: refuse it when it is significantly
    worse than production on labelled live traffic (the watcher's test); the figures go into ``details``."""
    live = next((a for a in (aliases.get(CANARY), aliases.get(SHADOW)) if a is not None and a.version == version),
                None)
    primary = aliases.get(PRODUCTION)
    if live is None or primary is None or primary.version == version:
        return
    # every labelled row the two versions answered (a canary's weight changes, or its rollback, do not reset it)
    verdict = compare_on_outcomes(registry.engine, name, task, version, primary.version, since=None)
    details["outcomes"] = verdict.to_dict()
    if verdict.worse:
        why = f"v{version} is worse than production v{primary.version} on labelled traffic: {verdict.summary()}"
        registry.record_event(name, "promote_refused", actor=actor, alias=PRODUCTION, reason=why,
                              details={"version": version, "outcomes": verdict.to_dict()})
        raise GateFailedError(f"{name} v{version} was not promoted to production: {why}", reasons=[why],
                              model=name)


def production_history(events: list[EventRecord]) -> list[int]:
    """Versions production has pointed at, oldest first, with rolled-back versions taken off the stack."""
    stack: list[int] = []
    for e in sorted(events, key=lambda e: e.id):
        if e.alias != PRODUCTION:
            continue
        if e.kind == "alias_removed":
            if stack and stack[-1] == e.from_version:
                stack.pop()
        elif e.kind == "rollback":
            if stack and stack[-1] == e.from_version:
                stack.pop()
            if e.to_version is not None and (not stack or stack[-1] != e.to_version):
                stack.append(e.to_version)
        elif e.to_version is not None and (not stack or stack[-1] != e.to_version):
            stack.append(e.to_version)
    return stack


@dataclass(frozen=True)
class RollbackResult:
    model: str
    from_version: int
    to_version: int


def rollback(registry: Registry, name: str, *, actor: str | None = None,
             reason: str | None = None) -> RollbackResult:
    """Point production back at the version it served before the current one."""
    current = registry.aliases(name).get(PRODUCTION)
    if current is None:
        raise RolloutError(f"model '{name}' has no production version to roll back", model=name)
    history = production_history(registry.events(name, limit=HISTORY_EVENTS))
    if len(history) < 2 or history[-1] != current.version:
        raise RolloutError(f"{name}: no earlier production version to roll back to (production is "
                           f"v{current.version}; history {history or 'empty'})", model=name)
    previous = history[-2]
    registry.set_alias(name, PRODUCTION, previous, actor=actor, kind="rollback",
                       reason=reason or f"manual rollback from v{current.version}",
                       details={"rolled_back": current.version})
    return RollbackResult(name, current.version, previous)


def set_weight(registry: Registry, name: str, weight: float, *, actor: str | None = None,
               reason: str | None = None) -> int:
    """Change the live canary's traffic share (an event of kind ``weight``); returns the canary's version.

    Not gated: the version already passed its gates when it became the canary.
    """
    if not 0.0 <= weight <= 1.0:
        raise BadRequestError(f"canary weight {weight} is not between 0 and 1", field="weight")
    canary = registry.aliases(name).get(CANARY)
    if canary is None:
        raise RolloutError(f"model '{name}' has no canary: promote a version --to canary first",
                           model=name)
    registry.set_alias(name, CANARY, canary.version, weight=weight, actor=actor, kind="weight",
                       reason=reason or f"canary weight {canary.weight} → {weight}")
    return canary.version


def stop_canary(registry: Registry, name: str, *, actor: str | None = None, reason: str | None = None,
                details: dict[str, Any] | None = None) -> int | None:
    """Send no more traffic to the canary (weight 0, alias kept for the record); its version, or None."""
    canary = registry.aliases(name).get(CANARY)
    if canary is None or not canary.weight:
        return None
    registry.set_alias(name, CANARY, canary.version, weight=0.0, actor=actor, kind="rollback",
                       reason=reason or "canary stopped", details=details)
    return canary.version

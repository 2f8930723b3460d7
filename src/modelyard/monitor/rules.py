"""Rules as small objects, and rule sets: what the one scheduler (``monitor/scheduler.py``) runs.

A ``Rule`` looks at one window of logged traffic and gives one verdict per thing it checks (a ``Finding``:
firing, ok, or unknown when there is too little traffic to say). A ``RuleSet`` is a named group of rules
with what it does on its findings, run every ``every`` seconds:

- ``monitor.alerting.AlertRuleSet`` ("alerts"): drift, prediction range, error rate and latency of every
  served version; findings are recorded in ``my_alerts`` and notified;
- ``rollout.watcher.CanaryRuleSet`` ("canary"): error rate, latency and disagreement of every live canary;
  a firing finding rolls the canary back, a healthy canary past its ``promote_after`` is promoted;
- ``rollout.retrain.RetrainRuleSet`` ("retrain"): scheduled and requested retrains, gated, to canary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

__all__ = ["NO_LEASE", "Finding", "HeldLease", "Rule", "RuleSet", "RuleSetRun", "firing"]

W_contra = TypeVar("W_contra", contravariant=True)


@dataclass
class Finding:
    """One rule's verdict on one version: ``firing`` is True, False, or None (too little data to say)."""

    model: str
    version: int
    rule: str
    firing: bool | None
    value: float | None
    threshold: float | None
    message: str
    feature: str | None = None
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.feature}" if self.feature else self.rule


class Rule(Protocol[W_contra]):
    """One check over a window (``monitor.window.Window`` for alerts, ``CanaryHealth`` for canaries)."""

    @property
    def name(self) -> str: ...

    def evaluate(self, window: W_contra) -> list[Finding]:
        """Verdicts on ``window``: one, or one per feature for the drift rules; none when switched off."""
        ...


def firing(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.firing]


@dataclass
class RuleSetRun:
    """What one run of a rule set saw and did."""

    at: datetime
    findings: list[Finding] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Model → the error that stopped its evaluation (the other models are still evaluated)."""


class HeldLease(Protocol):
    """The lease a rule set runs under: who holds it, and a renewal to call right before a one-time action."""

    @property
    def holder(self) -> str: ...

    def renew(self) -> bool:
        """Renew the lease; False when this process no longer holds it (then do not act)."""
        ...


@dataclass(frozen=True)
class _NoLease:
    holder: str = "this process"

    def renew(self) -> bool:
        return True


NO_LEASE: HeldLease = _NoLease()
"""For a rule set run directly (tests, a report): nothing to renew, always held."""


class RuleSet(Protocol):
    """A named set of rules the scheduler runs while it holds the lease, and what it does on findings."""

    @property
    def name(self) -> str: ...

    @property
    def every(self) -> float:
        """Seconds between runs."""
        ...

    def describe(self) -> str:
        """One line for the start-up log: the rules and their thresholds."""
        ...

    def run(self, now: datetime, lease: HeldLease) -> RuleSetRun:
        """Evaluate the window ending at ``now`` and act on the findings. ``lease.renew()`` says whether this
        process still holds the lease: call it right before an action that must happen once."""
        ...

    def standby(self) -> None:
        """Another process holds the lease: drop what only the lease holder should export."""
        ...

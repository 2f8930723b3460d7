"""Result types shared by every gate: a finding per measured figure, a result per gate, one report.

A gate never raises because a candidate is worse: it returns a ``GateResult`` whose failed findings say why,
so ``modelyard check`` can print every reason at once and ``promote`` can record them in the event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tolerances:
    """How far a candidate may differ from the live version before a gate fails. ``None`` disables a bound."""

    max_mean_shift: float | None = 0.02
    """|mean(candidate) - mean(current)| / |mean(current)| (regression)."""
    max_row_rel_diff: float | None = 0.15
    """The ``row_quantile`` of per-row |candidate - current| / |current| (regression)."""
    max_row_abs_diff: float | None = None
    """The ``row_quantile`` of per-row |candidate - current|, in target units (regression)."""
    row_quantile: float = 0.95
    min_agreement: float | None = 0.98
    """Share of rows where both versions predict the same class (classification)."""
    max_metric_drop: float | None = 0.02
    """Relative worsening of any held-out metric (higher-is-better and lower-is-better both handled)."""
    allow_removed_columns: bool = False
    """A candidate that no longer reads an input column is, by default, an accidentally removed feature."""
    allow_added_columns: bool = False
    """A candidate that needs a column the live version did not: callers do not send it yet."""
    max_slowdown: float | None = 1.5
    """Benchmark: candidate latency (and inverse throughput) may be at most this many times the current's."""
    max_train_slowdown: float | None = 3.0
    """Benchmark: the candidate's fit (wall time, from the manifests) may take at most this many times the
    current's. Loose on purpose: a moving window grows and shrinks the data, and fit times are noisy."""
    max_train_memory_ratio: float | None = 2.0
    """Benchmark: the candidate fit's peak memory over the current's (when both were measured the same way)."""
    min_importance_ratio: float | None = 0.1
    """Importance: a top feature of the live version must keep at least this fraction of its share."""
    importance_top_k: int = 5
    """Importance: how many of the live version's most important features are watched."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    """One measured figure against its bound; ``limit`` is None for figures reported but not gated."""

    name: str
    value: float | str | None
    limit: float | str | None = None
    passed: bool = True
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateResult:
    gate: str
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    @property
    def reasons(self) -> list[str]:
        return [f"{self.gate}: {f.detail or f.name}" for f in self.findings if not f.passed]

    def add(self, name: str, value: Any, limit: Any = None, *, passed: bool = True, detail: str = "") -> None:
        self.findings.append(Finding(name, value, limit, passed, detail))

    def bound(self, name: str, value: float, limit: float | None, *, at_least: bool = False,
              what: str = "") -> None:
        """Record ``value`` and fail it when it crosses ``limit`` (from above, or below with ``at_least``)."""
        if limit is None:
            self.add(name, value)
            return
        ok = value >= limit if at_least else value <= limit
        bound = f"< minimum {limit:.4g}" if at_least else f"> limit {limit:.4g}"
        self.add(name, value, limit, passed=ok, detail="" if ok else f"{what or name} {value:.4g} {bound}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "skipped": self.skipped,
            "reasons": self.reasons,
            "findings": [f.to_dict() for f in self.findings],
            "figures": self.figures,
        }


@dataclass
class GateReport:
    """Every gate of one candidate against one live version: what ``check`` prints and ``promote`` records."""

    model: str
    candidate: int
    current: int | None
    against: str
    gates: list[GateResult] = field(default_factory=list)
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def reasons(self) -> list[str]:
        return [r for g in self.gates for r in g.reasons]

    def summary(self) -> dict[str, Any]:
        """A small form for registry events: verdict and reasons, not every figure."""
        return {"passed": self.passed, "against": self.against, "current": self.current,
                "reasons": self.reasons, "gates": {g.gate: g.passed for g in self.gates}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "candidate": self.candidate,
            "current": self.current,
            "against": self.against,
            "passed": self.passed,
            "reasons": self.reasons,
            "tolerances": self.tolerances.to_dict(),
            "gates": [g.to_dict() for g in self.gates],
        }

"""Promotion gates: the differential and benchmark tests, shadow analysis and HTTP load tests.

``run_gates`` runs every gate of a candidate against an alias and returns a ``GateReport``;
``modelyard.rollout.promote`` takes it as a callable (rollout and checks are siblings and do not import
each other).
The names load on first use (``modelyard._lazy``): the CLI imports ``Tolerances`` without the gates.
"""

from __future__ import annotations

import typing

from modelyard import _lazy

if typing.TYPE_CHECKING:
    from modelyard.checks.benchmark import BenchmarkConfig, benchmark_test
    from modelyard.checks.differential import differential_test
    from modelyard.checks.gates import gate_factory, gate_runner, run_gates
    from modelyard.checks.loadtest import LoadConfig, LoadResult, StressResult, load, stress
    from modelyard.checks.results import Finding, GateReport, GateResult, Tolerances
    from modelyard.checks.shadow import shadow_report

__all__ = [
    "BenchmarkConfig",
    "Finding",
    "GateReport",
    "GateResult",
    "LoadConfig",
    "LoadResult",
    "StressResult",
    "Tolerances",
    "benchmark_test",
    "differential_test",
    "gate_factory",
    "gate_runner",
    "load",
    "run_gates",
    "shadow_report",
    "stress",
]

__getattr__, __dir__ = _lazy.lazy_names(__name__, {
    "BenchmarkConfig": "modelyard.checks.benchmark",
    "benchmark_test": "modelyard.checks.benchmark",
    "differential_test": "modelyard.checks.differential",
    "gate_factory": "modelyard.checks.gates",
    "gate_runner": "modelyard.checks.gates",
    "run_gates": "modelyard.checks.gates",
    "LoadConfig": "modelyard.checks.loadtest",
    "LoadResult": "modelyard.checks.loadtest",
    "StressResult": "modelyard.checks.loadtest",
    "load": "modelyard.checks.loadtest",
    "stress": "modelyard.checks.loadtest",
    "Finding": "modelyard.checks.results",
    "GateReport": "modelyard.checks.results",
    "GateResult": "modelyard.checks.results",
    "Tolerances": "modelyard.checks.results",
    "shadow_report": "modelyard.checks.shadow",
})

"""Promotion gates: the differential and benchmark tests, shadow analysis and HTTP load tests.

``run_gates`` runs every gate of a candidate against an alias and returns a ``GateReport``;
``modelyard.rollout.promote`` takes it as a callable (rollout and checks are siblings and do not import
each other).
"""

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

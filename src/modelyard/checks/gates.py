"""Run every promotion gate of one candidate version against the version an alias points at."""

from __future__ import annotations

from collections.abc import Callable

from modelyard.checks.benchmark import BenchmarkConfig, benchmark_test
from modelyard.checks.differential import differential_test
from modelyard.checks.importance import importance_test
from modelyard.checks.results import GateReport, GateResult, Tolerances
from modelyard.errors import VersionNotFoundError
from modelyard.registry import Registry
from modelyard.runtime import Model


def run_gates(
    registry: Registry,
    name: str,
    version: int,
    *,
    against: str = "production",
    tolerances: Tolerances | None = None,
    benchmark: bool = True,
    bench_config: BenchmarkConfig | None = None,
) -> GateReport:
    """Differential, importance (and benchmark) test of ``name`` v``version`` against ``name@against``.

    With nothing behind ``against`` (a model's first version) there is nothing to differ from: the gates
    are reported as skipped and pass.
    """
    tol = tolerances or Tolerances()
    candidate_record = registry.get_version(name, version)
    try:
        current_record = registry.resolve(f"{name}@{against}")
    except VersionNotFoundError:
        current_record = None
    report = GateReport(name, version, current_record.version if current_record else None, against,
                        tolerances=tol)
    if current_record is None:
        report.gates.append(GateResult("differential",
                                       skipped=f"{name} has no '{against}' version to compare with"))
        return report
    current = Model.load(registry.load_bundle(current_record))
    candidate = Model.load(registry.load_bundle(candidate_record))
    report.gates.append(differential_test(current, candidate, tol))
    if benchmark:
        report.gates.append(benchmark_test(current, candidate, tol, bench_config))
    else:
        report.gates.append(GateResult("benchmark", skipped="not requested"))
    report.gates.append(importance_test(current_record.manifest, candidate_record.manifest, tol))
    return report


def gate_runner(registry: Registry, name: str, version: int, **options: object) -> Callable[[], GateReport]:
    """A zero-argument callable for ``rollout.promote(gate=...)``: rollout does not import checks."""
    return lambda: run_gates(registry, name, version, **options)  # type: ignore[arg-type]


def gate_factory(**options: object) -> Callable[[Registry, str, int], Callable[[], GateReport]]:
    """What ``rollout.retrain`` asks for: (registry, name, version) → a gate callable, with ``options``."""
    return lambda registry, name, version: gate_runner(registry, name, version, **options)

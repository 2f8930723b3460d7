"""The differential gate catches what the essay warns of: a removed feature and an outdated data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.checks import BenchmarkConfig, Tolerances, run_gates
from modelyard.checks.benchmark import judge
from modelyard.config import Settings
from modelyard.registry import Registry
from tests.conftest import generate_houses, train_and_publish
from tests.rollout_helpers import MODEL, house_spec_folder, publish, train_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The live model and four candidates, trained once for the module."""
    root = tmp_path_factory.mktemp("houses")
    specs = {
        "current": house_spec_folder(root / "current"),
        "retrain_other_seed": house_spec_folder(root / "seed",
                                                edit=lambda s: s.replace("seed = 42", "seed = 7")),
        "feature_removed": house_spec_folder(root / "removed", edit=lambda s: s.replace('"condition", ', "")),
        "outdated_data": house_spec_folder(root / "shifted", generate_houses(3000, seed=11, shift=0.3)),
    }
    return {k: train_bundle(p, root / f"{k}-bundle") for k, p in specs.items()}


def _gate(settings: Settings, bundles: dict[str, Path], candidate: str, **tol: object):
    publish(settings, bundles["current"], alias="production")
    version = publish(settings, bundles[candidate])
    return run_gates(Registry(settings), MODEL, version, against="production", benchmark=False,
                     tolerances=Tolerances(**tol))  # type: ignore[arg-type]


def test_removed_feature_fails_the_differential_gate(any_settings: Settings,
                                                     bundles: dict[str, Path]) -> None:
    report = _gate(any_settings, bundles, "feature_removed")
    assert not report.passed
    assert any("no longer reads input column(s) condition" in r for r in report.reasons)
    # Not only the schema: with removed columns allowed, the worse metrics still fail it.
    report = _gate(any_settings, bundles, "feature_removed", allow_removed_columns=True)
    assert not report.passed
    differential = [r for r in report.reasons if r.startswith("differential")]
    assert differential and all("worsens" in r for r in differential), report.reasons
    # the importance gate sees the same removal from the other side: the feature's attribution collapsed
    assert all(r.startswith(("differential", "importance")) for r in report.reasons), report.reasons


def test_outdated_data_fails_the_differential_gate(any_settings: Settings, bundles: dict[str, Path]) -> None:
    report = _gate(any_settings, bundles, "outdated_data")
    assert not report.passed
    assert any("shift of the mean prediction" in r for r in report.reasons), report.reasons
    diff = report.gates[0].figures
    assert diff["current-ref"]["predictions"]["mean_shift"] > 0.1  # bigger, pricier houses: higher prices
    assert "metrics" in diff["current-ref"] and "metrics" in diff["candidate-ref"]


def test_retrain_on_the_same_data_passes(any_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, any_settings, alias="production")
    version = train_and_publish(house_spec, any_settings, alias=None)
    report = run_gates(Registry(any_settings), MODEL, version, against="production",
                       bench_config=BenchmarkConfig(latency_calls=20, throughput_rows=2000,
                                                    throughput_rounds=2))
    diff = report.gates[0]
    assert diff.passed, report.reasons
    assert diff.figures["sets_compared"] == 1  # same data, same seed: one reference set
    assert diff.figures["reference"]["predictions"]["identical_share"] == 1.0
    bench = report.gates[1]
    assert bench.gate == "benchmark" and {f.name for f in bench.findings} == {
        "latency_ratio", "throughput_slowdown", "train_time_ratio", "train_memory_ratio"}
    assert bench.figures["candidate"]["throughput_rows_s"] > 0


def test_retrain_with_another_seed_passes(sqlite_settings: Settings, bundles: dict[str, Path]) -> None:
    report = _gate(sqlite_settings, bundles, "retrain_other_seed")
    assert report.passed, report.reasons
    assert report.gates[0].figures["sets_compared"] == 2


def test_first_version_has_nothing_to_differ_from(sqlite_settings: Settings,
                                                  bundles: dict[str, Path]) -> None:
    version = publish(sqlite_settings, bundles["current"])
    report = run_gates(Registry(sqlite_settings), MODEL, version, against="production")
    assert report.passed and report.current is None and report.gates[0].skipped


def test_benchmark_judge_fails_a_slower_candidate() -> None:
    figures = {"current": {"latency_ms_p50": 2.0, "throughput_rows_s": 100_000.0},
               "candidate": {"latency_ms_p50": 5.0, "throughput_rows_s": 90_000.0},
               "latency_ratio": 2.5, "throughput_slowdown": 100_000 / 90_000}
    result = judge(figures, Tolerances(max_slowdown=1.5))
    assert not result.passed
    assert result.reasons == [
        "benchmark: candidate p50 latency 5 ms is 2.50x the current's; ratio 2.5 > limit 1.5"]
    assert judge(figures, Tolerances(max_slowdown=3.0)).passed

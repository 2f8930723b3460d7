"""PSI and KS against the reference statistics a bundle stores (profile.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from modelyard.bundle import ReferenceProfile, profile_frame, profile_series
from modelyard.monitor.drift import OTHER, PREDICTION, evaluate_drift, ks_statistic, psi
from modelyard.monitor.window import split_windows
from modelyard.predlog import PredictionRecord, prediction_value

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_psi_matches_the_formula_and_is_zero_for_identical_bins() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))
    assert math.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))  # empty bins are floored, not infinite


def test_ks_statistic_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 1.2, 700)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    assert ks_statistic(a, a) == 0.0


def manifest_for(frame: pd.DataFrame, predictions: np.ndarray) -> ReferenceProfile:
    return ReferenceProfile(inputs=profile_frame(frame, {"city"}), prediction=profile_series(pd.Series(predictions)))


def window_of(frame: pd.DataFrame, predictions: np.ndarray, version: int = 1):  # type: ignore[no-untyped-def]
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    records = [
        PredictionRecord(
            request_id=str(i),
            model="m",
            version=version,
            inputs=rows[i : i + 50],
            outputs=[float(p) for p in predictions[i : i + 50]],
            n_rows=50,
            ts=NOW,
        )
        for i in range(0, len(rows), 50)
    ]
    return split_windows(records, "m", NOW - timedelta(hours=1), NOW)[version]


def sample(
    n: int, seed: int, shift: float = 0.0, city_p: tuple[float, float, float] = (0.5, 0.3, 0.2)
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"size": rng.normal(100 + 40 * shift, 20, n), "city": rng.choice(["a", "b", "c"], n, p=list(city_p))}
    )


def test_same_distribution_is_stable_and_a_shift_is_not() -> None:
    ref = sample(4000, 1)
    manifest = manifest_for(ref, ref["size"].to_numpy() * 2)
    same = sample(2000, 2)
    stable = evaluate_drift(manifest, window_of(same, same["size"].to_numpy() * 2))
    assert stable.rows == 2000
    assert stable.features["size"].psi < 0.05 and stable.features["size"].ks < 0.06
    assert stable.features["city"].psi < 0.02 and stable.features["city"].ks is None
    assert stable.prediction is not None and stable.prediction.feature == PREDICTION
    assert stable.prediction.psi < 0.05

    moved = sample(2000, 3, shift=1.0, city_p=(0.1, 0.2, 0.7))
    drifted = evaluate_drift(manifest, window_of(moved, moved["size"].to_numpy() * 2))
    assert drifted.features["size"].psi > 1.0 and drifted.features["size"].ks > 0.5
    assert drifted.features["city"].psi > 0.25
    assert drifted.prediction.psi > 1.0
    # binned on the reference's own deciles: each reference bin holds about a tenth
    assert np.allclose(drifted.features["size"].reference, 0.1, atol=0.01)
    assert sum(drifted.features["size"].current) == pytest.approx(1.0)


def test_unseen_category_lands_in_the_other_bin_and_missing_columns_count_as_missing() -> None:
    ref = sample(1000, 1)
    manifest = manifest_for(ref, ref["size"].to_numpy())
    now = pd.DataFrame({"city": ["zzz"] * 300})  # `size` never sent
    report = evaluate_drift(manifest, window_of(now, np.ones(300)))
    city = report.features["city"]
    assert city.labels[-1] == OTHER and city.current[-1] == 1.0 and city.psi > 1
    assert report.features["size"].n == 0 and report.features["size"].psi is None
    assert report.features["size"].missing_current == 1.0


def test_split_windows_groups_versions_and_skips_failed_calls() -> None:
    records = [
        PredictionRecord(
            request_id="1", model="m", version=1, inputs=[{"x": 1}], outputs=[0.5], latency_ms=3, ts=NOW
        ),
        PredictionRecord(
            request_id="2",
            model="m",
            version=2,
            inputs=[{"x": 2}, {"x": 3}],
            outputs=[{"prediction": 1}, {"prediction": 2}],
            latency_ms=5,
            ts=NOW,
        ),
        PredictionRecord(request_id="3", model="m", version=2, inputs=[{"x": 4}], error="boom", ts=NOW),
        PredictionRecord(request_id="4", model="other", version=1, inputs=[{"x": 9}], outputs=[1], ts=NOW),
    ]
    windows = split_windows(records, "m", NOW - timedelta(hours=1), NOW)
    assert set(windows) == {1, 2}
    assert windows[2].requests == 2 and windows[2].errors == 1 and windows[2].error_rate == 0.5
    assert windows[2].rows == [{"x": 2}, {"x": 3}] and windows[2].predictions == [1, 2]
    assert windows[1].latency_quantile(0.5) == 3.0
    assert prediction_value([7]) == 7 and prediction_value({"label": "a"}) == "a"

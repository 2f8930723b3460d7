"""The statistics behind the gates, the watcher's disagreement and the production history, exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from modelyard.checks.compare import classification_stats, gate_predictions, regression_stats
from modelyard.checks.differential import metric_drop
from modelyard.checks.loadtest import read_rows
from modelyard.checks.results import GateResult, Tolerances
from modelyard.errors import BadRequestError
from modelyard.predlog import decode_outputs
from modelyard.registry import EventRecord
from modelyard.rollout import production_history
from modelyard.rollout.watcher import disagreement


def test_regression_stats_measure_shift_and_row_differences() -> None:
    cur = np.array([100.0, 200.0, 300.0, 400.0])
    stats = regression_stats(cur, cur * 1.1)
    assert stats["mean_shift"] == pytest.approx(0.1)
    assert stats["rel_diff_max"] == pytest.approx(0.1)
    assert stats["abs_diff_max"] == pytest.approx(40.0)
    assert stats["identical_share"] == 0.0
    assert regression_stats(cur, cur)["identical_share"] == 1.0


def test_regression_stats_skip_missing_values() -> None:
    stats = regression_stats(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, None], dtype=float))
    assert stats["rows"] == 1


def test_gate_predictions_fails_beyond_tolerance_and_says_why() -> None:
    result = GateResult("differential")
    gate_predictions(result, np.full(50, 100.0), np.full(50, 110.0), "regression", Tolerances(), label="ref")
    assert not result.passed
    assert any("shift of the mean prediction (+10.00%)" in r for r in result.reasons)
    ok = GateResult("differential")
    gate_predictions(ok, np.full(50, 100.0), np.full(50, 101.0), "regression", Tolerances(), label="ref")
    assert ok.passed


def test_classification_agreement_survives_a_json_round_trip() -> None:
    stats = classification_stats([0, 1, 1, 0], [0.0, "1", 0, 0])
    assert stats["agreement"] == 0.75 and stats["disagreements"] == 1
    result = GateResult("shadow")
    gate_predictions(result, [0, 1, 1, 0], [0, 1, 0, 0], "classification", Tolerances(min_agreement=0.9),
                     label="shadow")
    assert result.reasons == ["shadow: shadow: class agreement 0.75 < minimum 0.9"]


def test_metric_drop_knows_which_way_is_better() -> None:
    assert metric_drop("r2", 0.8, 0.72) == pytest.approx(0.1)
    assert metric_drop("rmse", 100.0, 110.0) == pytest.approx(0.1)
    assert metric_drop("accuracy", 0.9, 0.95) < 0
    assert metric_drop("mae", 10.0, 9.0) < 0


def test_watcher_disagreement_counts_rows_beyond_the_tolerance() -> None:
    pairs = [(100.0, 100.0)] * 8 + [(100.0, 150.0), (100.0, None)]
    assert disagreement(pairs, "regression", 0.05) == pytest.approx(0.2)
    assert disagreement([("a", "a"), ("a", "b")], "classification", 0.0) == 0.5


def test_decode_outputs_reads_plain_and_object_outputs() -> None:
    assert decode_outputs([1.5, 2.5]) == [1.5, 2.5]
    assert decode_outputs([{"prediction": 3}, {"label": "x"}]) == [3, "x"]
    assert decode_outputs({"predictions": [7]}) == [7]
    assert decode_outputs(4.0) == [4.0]


def _event(i: int, kind: str, frm: int | None, to: int | None, alias: str = "production") -> EventRecord:
    return EventRecord(i, "m", kind, alias, frm, to, "me", None, None, datetime.now(UTC))


def test_production_history_takes_rolled_back_versions_off_the_stack() -> None:
    events = [_event(1, "alias_set", None, 1), _event(2, "promote", 1, 2),
              _event(3, "alias_set", 2, 2, "canary"), _event(4, "promote", 2, 3), _event(5, "rollback", 3, 2)]
    assert production_history(events) == [1, 2]
    assert production_history([*events, _event(6, "rollback", 2, 1)]) == [1]
    assert production_history([*events, _event(6, "promote", 2, 4)]) == [1, 2, 4]


def test_read_rows_accepts_csv_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b\n1,x\n,y\n")
    assert read_rows(tmp_path / "r.csv") == [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}]
    (tmp_path / "r.json").write_text(json.dumps({"instances": [{"a": 1}]}))
    assert read_rows(tmp_path / "r.json") == [{"a": 1}]
    (tmp_path / "r.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_rows(tmp_path / "r.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(BadRequestError):
        read_rows(tmp_path / "bad.json")

"""`modelyard explain`, `models show` and `check` as a user types them: a logged request explained with the
version that made it and side by side with a newer one; the global importance shown and gated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

import modelyard
from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.registry import Registry
from tests.conftest import run_cli


def _publish(settings: Settings, X: pd.DataFrame, y: pd.Series, fit_on: pd.DataFrame | None = None,
             alias: str | None = "production") -> None:
    forest = RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0).fit(
        X if fit_on is None else fit_on, y)
    modelyard.publish("rf", forest, X, y, alias=alias, settings=settings)


def test_explain_against_a_newer_version_and_the_importance_gate(sqlite_settings: Settings,
                                                                 tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "c": rng.normal(size=400)})
    y = 4 * X["a"] + X["b"] + 0.5 * X["c"]
    _publish(sqlite_settings, X, y)
    v1 = modelyard.load("rf@1", settings=sqlite_settings)
    rows = X.head(2).to_dict("records")
    insert_records(Registry(sqlite_settings).engine, [PredictionRecord(
        request_id="cli-1", model="rf", version=1, inputs=rows, outputs=v1.predict(rows).tolist(), n_rows=2)])
    _publish(sqlite_settings, X, y, fit_on=X.assign(a=0.0), alias=None)  # v2: column `a` emptied upstream

    page = tmp_path / "diff.html"
    out = run_cli("explain", "cli-1", "--row", "1", "--against", "2", "--json", "--html", str(page),
                  settings=sqlite_settings)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["explanation"]["model"]["version"] == 1 and body["replay"]["matches"]
    difference = body["against"]["difference"]
    assert difference["after"]["version"] == 2 and difference["changed_columns"][0] == "a"
    assert "What changed the answer" in page.read_text()

    table = run_cli("explain", "cli-1", "--against", "2", settings=sqlite_settings)
    assert table.returncode == 0, table.stderr
    assert "v1 → v2" in table.stdout and "columns that changed the answer: a" in table.stdout

    show = run_cli("models", "show", "rf@1", settings=sqlite_settings)
    assert show.returncode == 0 and "global importance" in show.stdout, show.stdout + show.stderr

    check = run_cli("check", "rf", "2", "--skip-benchmark", "--max-mean-shift", "100", "--max-row-rel-diff",
                    "100", "--max-metric-drop", "100", settings=sqlite_settings)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "feature 'a'" in check.stderr and "accidentally removed" in check.stderr

    missing = run_cli("explain", "no-such-request", settings=sqlite_settings)
    assert missing.returncode == 1 and "no prediction with request id" in missing.stderr

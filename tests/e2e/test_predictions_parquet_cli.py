"""The Parquet log target as a user meets it: a server started with ``MODELYARD_LOG_TARGET=parquet`` logs a
request into the partitioned files, and ``modelyard predictions show`` and ``modelyard replay`` find it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

import modelyard
from modelyard.config import Settings
from modelyard.predlog import log_reader
from tests.conftest import run_cli
from tests.support import Server, wait_until


def test_predictions_show_and_replay_read_the_parquet_log(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".modelyard", log_target="parquet")
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    forest = RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(X, 3 * X["a"] - X["b"])
    modelyard.publish("rf", forest, X, 3 * X["a"] - X["b"], alias="production", settings=settings)
    rows = X.head(2).to_dict("records")

    with Server(settings, tmp_path / "server.log", MODELYARD_LOG_TARGET="parquet") as server:
        answer = httpx.post(f"{server.url}/v1/models/rf/predict", json={"instances": rows},
                            headers={"X-Request-ID": "pq-1"}, timeout=30)
        assert answer.status_code == 200, answer.text
        reader = log_reader(settings)
        wait_until(lambda: reader.by_request("pq-1"), 30, "the request in the Parquet log")
    day = sorted((settings.resolved_log_parquet_root / "model=rf").glob("date=*/part-*.parquet"))
    assert day, "no part file under model=rf/date=..."
    assert not _table_has(settings, "pq-1")  # the log went to Parquet, not to the registry's table

    show = run_cli("predictions", "show", "pq-1", "--json", settings=settings, MODELYARD_LOG_TARGET="parquet")
    assert show.returncode == 0, show.stderr
    (record,) = json.loads(show.stdout)
    assert record["model"] == "rf" and record["version"] == 1 and record["inputs"] == rows
    assert record["outputs"] == answer.json()["predictions"]

    replayed = run_cli("replay", "pq-1", settings=settings, MODELYARD_LOG_TARGET="parquet")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "match: rf v1 request pq-1" in replayed.stdout


def _table_has(settings: Settings, request_id: str) -> bool:
    """Whether the SQL log table holds the request (it must not: the log went to Parquet)."""
    from modelyard.predlog import get_records
    from modelyard.registry import Registry

    return bool(get_records(Registry(settings).engine, request_id))

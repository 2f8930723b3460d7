"""Batch scoring (pattern 2) on SQLite and PostgreSQL: predictions, rejects, run records, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import modelyard
from modelyard.batch import BatchError, score
from modelyard.batch.sink import Sink
from modelyard.config import Settings
from modelyard.predlog import get_records, list_records
from modelyard.registry.db import get_engine
from tests.batchstream_helpers import (
    cancer_bundle_once,
    house_bundle_once,
    houses_input,
    publish,
    read_sql,
    run_details,
    spoil,
    write_table,
)


@pytest.fixture(scope="session")
def house_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_bundle_once(tmp_path_factory)


@pytest.fixture(scope="session")
def cancer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cancer_bundle_once(tmp_path_factory)


@pytest.fixture
def house_model(house_bundle: Path, any_settings: Settings) -> Settings:
    publish(house_bundle, any_settings)
    return any_settings


def _expected(settings: Settings, frame: pd.DataFrame) -> pd.Series:
    model = modelyard.load("house-prices", settings=settings)
    return pd.Series(model.predict(frame.drop(columns=["id"])), index=frame["id"].to_numpy())


def test_scores_every_row_once_with_in_process_values_and_records_the_run(house_model: Settings) -> None:
    settings = house_model
    url = settings.resolved_database_url
    frame = houses_input(2500)
    write_table(url, "houses", frame)
    query = "SELECT * FROM houses WHERE id > 0 AND neighborhood NOT LIKE '%:x%'"  # no binds, no % params
    result = score("house-prices", source=query, target="house_scores",
                   settings=settings, key="id", chunk_size=400)
    assert (result.rows_scored, result.rows_rejected, result.row_count) == (2500, 0, 2500)
    out = read_sql(url, "SELECT * FROM house_scores")
    assert len(out) == 2500 and out["id"].is_unique  # the user's key keeps its own name
    assert set(out.columns) == {"run_id", "id", "prediction", "model", "version", "scored_at"}
    assert (out["run_id"] == result.run_id).all() and (out["model"] == "house-prices").all()
    assert (out["version"] == 1).all()
    expected = _expected(settings, frame)
    np.testing.assert_allclose(out.set_index("id")["prediction"].sort_index(), expected.sort_index(),
                               rtol=1e-9)
    run = read_sql(url, f"SELECT * FROM modelyard_batch_runs WHERE run_id = '{result.run_id}'").iloc[0]
    assert run["status"] == "done" and run["version"] == 1 and run["row_count"] == 2500
    assert run["source"] == query and run["target"] == "house_scores"
    assert run["rows_scored"] == 2500 and run["finished_at"] is not None
    [record] = get_records(get_engine(url), result.run_id)
    assert record.route == "batch" and record.n_rows == 2500 and record.outputs["table"] == "house_scores"


def test_rows_failing_the_schema_go_to_the_rejected_table_and_the_run_goes_on(house_model: Settings) -> None:
    settings = house_model
    url = settings.resolved_database_url
    frame = spoil(houses_input(1200), {3: ("area_sqm", "huge"), 700: ("bedrooms", None),
                                       701: ("house_type", None), 1100: ("area_sqm", "inf")})
    write_table(url, "houses", frame)
    result = score("house-prices", source="houses", target="scores", settings=settings, key="id",
                   chunk_size=500)
    assert (result.rows_scored, result.rows_rejected) == (1196, 4)
    rejected = read_sql(url, "SELECT * FROM scores_rejected ORDER BY position")
    assert rejected["key"].tolist() == ["4", "701", "702", "1101"]
    assert rejected["position"].tolist() == [3, 700, 701, 1100]
    assert rejected["field"].tolist() == ["area_sqm", "bedrooms", "house_type", "area_sqm"]
    assert "'huge' is not a number" in rejected["reason"][0] and "row 3" in rejected["reason"][0]
    assert "value is required" in rejected["reason"][1]
    scored = read_sql(url, "SELECT id FROM scores")["id"]
    assert set(scored) == set(range(1, 1201)) - {4, 701, 702, 1101}


def test_keep_carries_input_columns_through_beside_the_key(house_model: Settings) -> None:
    settings = house_model
    url = settings.resolved_database_url
    frame = spoil(houses_input(600), {5: ("area_sqm", "x")})
    write_table(url, "houses", frame)
    result = score("house-prices", source="houses", target="kept", settings=settings, key="id",
                   chunk_size=250, keep=("neighborhood", "bedrooms", "id"))
    assert (result.rows_scored, result.rows_rejected) == (599, 1)
    out = read_sql(url, "SELECT * FROM kept ORDER BY id")
    assert list(out.columns)[:4] == ["run_id", "id", "neighborhood", "bedrooms"]
    good = frame.drop(index=[5]).reset_index(drop=True)
    assert out["id"].tolist() == good["id"].tolist()
    assert out["neighborhood"].tolist() == good["neighborhood"].tolist()
    np.testing.assert_array_equal(out["bedrooms"].to_numpy(dtype=float), good["bedrooms"].to_numpy(dtype=float))
    with pytest.raises(BatchError, match="--keep column 'nope'"):
        score("house-prices", source="houses", target="kept2", settings=settings, key="id", keep=("nope",))
    with pytest.raises(BatchError, match="its own column 'prediction'"):
        score("house-prices", source="houses", target="kept3", settings=settings, keep=("prediction",))


def test_a_source_without_rows_scores_zero_rows(house_model: Settings, tmp_path: Path) -> None:
    settings = house_model
    url = settings.resolved_database_url
    write_table(url, "houses", houses_input(50))
    result = score("house-prices", source="SELECT * FROM houses WHERE id < 0", target="none",
                   settings=settings, key="id")
    assert (result.rows_scored, result.rows_rejected, result.row_count, result.status) == (0, 0, 0, "done")
    houses_input(3).head(0).to_csv(tmp_path / "empty.csv", index=False)  # a header and nothing else
    result = score("house-prices", source=str(tmp_path / "empty.csv"), target="none2", settings=settings)
    assert (result.rows_scored, result.status) == (0, "done")


def test_a_finished_run_id_is_not_scored_twice(house_model: Settings) -> None:
    settings = house_model
    url = settings.resolved_database_url
    write_table(url, "houses", houses_input(300))
    first = score("house-prices", source="houses", target="s", settings=settings, key="id", run_id="r-1")
    again = score("house-prices", source="houses", target="s", settings=settings, key="id", run_id="r-1")
    assert first.rows_scored == 300 and again.already_done and again.rows_scored == 300
    assert read_sql(url, "SELECT count(*) AS n FROM s")["n"][0] == 300
    with pytest.raises(BatchError, match="was started with target table 's'"):
        score("house-prices", source="houses", target="other", settings=settings, key="id", run_id="r-1")


def test_a_run_resumes_after_the_committed_prefix_and_keeps_its_version(house_model: Settings,
                                                                        house_bundle: Path) -> None:
    """An interrupted run (here: its last chunks deleted, as if never committed) continues where it stopped
    with the version it started with, even though production moved on meanwhile."""
    settings = house_model
    url = settings.resolved_database_url
    frame = spoil(houses_input(1000), {950: ("area_sqm", "x")})
    write_table(url, "houses", frame)
    score("house-prices", source="houses", target="s", settings=settings, key="id", run_id="r",
          chunk_size=100)
    engine = get_engine(url)

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM s WHERE id > 600"))
        conn.execute(text("DELETE FROM s_rejected"))
        conn.execute(text("UPDATE modelyard_batch_runs SET status = 'failed'"))
    assert publish(house_bundle, settings) == 2  # production moves on to version 2
    resumed = score("house-prices", source="houses", target="s", settings=settings, key="id", run_id="r",
                    chunk_size=100)
    assert resumed.resumed and resumed.version == 1
    assert (resumed.rows_scored, resumed.rows_rejected) == (999, 1)
    out = read_sql(url, "SELECT id, version FROM s")
    assert out["id"].is_unique and len(out) == 999 and set(out["version"]) == {1}
    details = run_details(url)
    assert details["attempts"] == 2 and details["resumed_at_row"] == 600


def test_files_and_a_classifier_with_probabilities(tmp_path: Path, cancer_bundle: Path,
                                                   any_settings: Settings) -> None:
    publish(cancer_bundle, any_settings)
    data = pd.read_csv(cancer_bundle.parent / "breast_cancer.csv").drop(columns=["target"]).head(400)
    data.to_parquet(tmp_path / "in.parquet")
    data.to_csv(tmp_path / "in.csv", index=False)
    model = modelyard.load("breast-cancer", settings=any_settings)
    expected, labels = model.predict_proba(data), model.predict(data)
    second = str(model.classes_[1])
    for name in ("in.parquet", "in.csv"):
        result = score("breast-cancer", source=str(tmp_path / name), target=f"cancer_{name[3:]}",
                       settings=any_settings, chunk_size=150)
        assert result.rows_scored == 400 and result.row_count == 400
        out = read_sql(any_settings.resolved_database_url, f"SELECT * FROM cancer_{name[3:]} ORDER BY key")
        assert out["key"].tolist() == list(range(400))
        probs = out["probabilities"].map(lambda v: v if isinstance(v, dict) else json.loads(v))
        np.testing.assert_allclose([p[second] for p in probs], expected[:, 1], atol=1e-6)
        assert out["prediction"].tolist() == labels.tolist()


def test_log_rows_writes_one_prediction_record_per_row(house_model: Settings) -> None:
    settings = house_model
    url = settings.resolved_database_url
    write_table(url, "houses", houses_input(50))
    result = score("house-prices", source="houses", target="s", settings=settings, key="id", log_rows=True)
    records = list_records(get_engine(url), "house-prices", route="batch", limit=None)
    assert len(records) == 51
    row = next(r for r in records if r.request_id == f"{result.run_id}:7")
    assert row.inputs[0]["id"] == 7 and isinstance(row.outputs[0], float)


def test_an_existing_table_of_another_shape_is_refused(house_model: Settings) -> None:
    settings = house_model
    write_table(settings.resolved_database_url, "houses", houses_input(20))
    with pytest.raises(BatchError, match="not a modelyard output table"):
        score("house-prices", source="houses", target="houses", settings=settings, key="id")
    with pytest.raises(BatchError, match="key column 'nope'"):
        score("house-prices", source="houses", target="s", settings=settings, key="nope")
    assert not Sink(get_engine(settings.resolved_database_url), "s", task="regression", classes=None).ready


@pytest.mark.postgres
def test_a_run_id_being_scored_elsewhere_is_refused_and_left_alone(house_bundle: Path,
                                                                   pg_settings: Settings) -> None:
    from modelyard.batch.sink import _lock_key
    from modelyard.errors import RunBusyError

    publish(house_bundle, pg_settings)
    url = pg_settings.resolved_database_url
    write_table(url, "houses", houses_input(100))
    score("house-prices", source="houses", target="s", settings=pg_settings, key="id", run_id="busy",
          chunk_size=30)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE modelyard_batch_runs SET status = 'running'"))
        conn.execute(text("DELETE FROM s WHERE id > 50"))
    holder = get_engine(url).connect()  # another live process, as far as PostgreSQL can tell
    try:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key("busy")})
        with pytest.raises(RunBusyError, match="being scored by another process"):
            score("house-prices", source="houses", target="s", settings=pg_settings, key="id", run_id="busy")
        assert read_sql(url, "SELECT status FROM modelyard_batch_runs")["status"][0] == "running"
    finally:
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
        holder.close()
    done = score("house-prices", source="houses", target="s", settings=pg_settings, key="id", run_id="busy")
    assert done.resumed and done.rows_scored == 100

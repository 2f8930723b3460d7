"""``--engine spark``: the same scoring as the local engine, as a pandas UDF (``mapInArrow``) on PySpark in
local mode. One Spark session for the module (a JVM start is slow); every answer is compared with the local
engine's on the same input: predictions, probabilities, rejects (key, position, reason, field, row)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

import modelyard
from modelyard.batch import BatchError, score
from modelyard.config import Settings
from modelyard.predlog import list_records
from modelyard.registry.db import get_engine
from tests.batchstream_helpers import (
    house_bundle_once,
    houses_input,
    publish,
    read_sql,
    run_details,
    spoil,
    write_table,
)
from tests.conftest import SRC, cli_env

REJECT_COLUMNS = ["key", "position", "reason", "field", "row"]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[2] session for the module, made by modelyard's own ``session`` with the settings a user
    would pass (PYSPARK_SUBMIT_ARGS): C1-only JIT (the JVM starts twice as fast on a busy machine), small
    file splits so a Parquet file is read as several partitions."""
    from modelyard.batch.spark import session

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # the workers' import
        mp.setenv("PYSPARK_SUBMIT_ARGS", " ".join([
            "--conf spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1", "--conf spark.ui.enabled=false",
            "--conf spark.sql.shuffle.partitions=2", "--conf spark.sql.files.maxPartitionBytes=32k",
            "pyspark-shell"]))
        spark = session("local[2]")
        try:
            yield spark
        finally:
            spark.stop()


@pytest.fixture(scope="module")
def house_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_bundle_once(tmp_path_factory)


def _lake_rows(n: int, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})


def _publish_classifier(settings: Settings) -> None:
    """A logistic regression with text classes (probabilities; trained in milliseconds)."""
    from sklearn.linear_model import LogisticRegression

    frame = _lake_rows(300, seed=1)
    y = np.where(frame["a"] + 0.5 * frame["b"] > 0, "yes", "no")
    modelyard.publish("churn", LogisticRegression().fit(frame, y), frame, pd.Series(y), alias="production",
                      settings=settings)


def _rejects(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    frame = frame.sort_values("position")
    rows = frame["row"].map(lambda v: v if isinstance(v, dict) else json.loads(v))
    return list(zip(frame["key"], frame["position"].astype(int), frame["reason"], frame["field"], rows,
                    strict=True))


def test_a_query_scored_on_spark_equals_the_local_engine_rejects_included_and_resumes(
        spark: Any, house_bundle: Path, any_settings: Settings) -> None:
    settings = any_settings
    publish(house_bundle, settings)
    url = settings.resolved_database_url
    bad = {3: ("area_sqm", "huge"), 700: ("bedrooms", None), 701: ("house_type", None), 1999: ("area_sqm", "x")}
    write_table(url, "houses", spoil(houses_input(2000), bad))
    query = "SELECT * FROM houses WHERE id > 0"
    local = score("house-prices", source=query, target="by_local", settings=settings, key="id",
                  chunk_size=700, keep=("neighborhood",))
    on_spark = score("house-prices", source=query, target="by_spark", settings=settings, key="id",
                     chunk_size=700, keep=("neighborhood",), engine="spark", run_id="spark-1")
    assert (on_spark.rows_scored, on_spark.rows_rejected, on_spark.row_count) == (1996, 4, 2000)
    assert (local.rows_scored, local.rows_rejected) == (on_spark.rows_scored, on_spark.rows_rejected)

    def compare() -> None:
        ours = read_sql(url, "SELECT * FROM by_spark ORDER BY id")
        theirs = read_sql(url, "SELECT * FROM by_local ORDER BY id")
        assert list(ours.columns) == list(theirs.columns)  # same table shape: key under its name, kept column
        assert ours["id"].tolist() == theirs["id"].tolist() and ours["id"].is_unique
        np.testing.assert_array_equal(ours["prediction"].to_numpy(), theirs["prediction"].to_numpy())
        assert ours["neighborhood"].tolist() == theirs["neighborhood"].tolist()
        assert _rejects(read_sql(url, "SELECT * FROM by_spark_rejected")) == \
            _rejects(read_sql(url, "SELECT * FROM by_local_rejected"))
        assert (ours["run_id"] == "spark-1").all()

    compare()
    [reason] = read_sql(url, "SELECT reason FROM by_spark_rejected WHERE position = 3")["reason"]
    assert "'huge' is not a number" in reason and "row 3" in reason
    run = read_sql(url, "SELECT * FROM modelyard_batch_runs WHERE run_id = 'spark-1'").iloc[0]
    details = run_details(url, "spark-1")
    assert run["status"] == "done" and details["engine"] == "spark" and run["rows_scored"] == 1996

    # interrupted after its first chunk (the later ones never committed): the rerun scores only the rest
    with get_engine(url).begin() as conn:
        conn.execute(text("DELETE FROM by_spark WHERE id > 700"))
        conn.execute(text("DELETE FROM by_spark_rejected WHERE position >= 700"))
        conn.execute(text("UPDATE modelyard_batch_runs SET status = 'failed' WHERE run_id = 'spark-1'"))
    resumed = score("house-prices", source=query, target="by_spark", settings=settings, key="id",
                    chunk_size=700, keep=("neighborhood",), engine="spark", run_id="spark-1")
    assert resumed.resumed and (resumed.rows_scored, resumed.rows_rejected) == (1996, 4)
    compare()
    details = run_details(url, "spark-1")
    assert details["attempts"] == 2 and details["resumed_at_row"] == 700


def test_spark_python_workers_load_the_model_themselves(spark: Any, house_bundle: Path,
                                                         sqlite_settings: Settings) -> None:
    publish(house_bundle, sqlite_settings)
    write_table(sqlite_settings.resolved_database_url, "houses", houses_input(300))
    result = score("house-prices", source="houses", target="s", settings=sqlite_settings, key="id",
                   engine="spark", log_rows=True)
    records = list_records(get_engine(sqlite_settings.resolved_database_url), "house-prices", route="batch",
                           limit=None)
    assert len(records) == 301  # one per row (--log-rows, the rows' inputs carried back from Spark) + the run's
    row = next(r for r in records if r.request_id == f"{result.run_id}:7")
    assert row.inputs[0]["id"] == 7 and isinstance(row.outputs[0], float)

    def loaded(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from modelyard.batch import chunk

        names = [f"{k[2]}@{k[3]}" for k in chunk._models]
        for b in batches:
            yield pa.RecordBatch.from_pydict({"pid": [os.getpid()] * b.num_rows,
                                              "models": [",".join(names)] * b.num_rows})

    seen = spark.range(0, 64, numPartitions=4).mapInArrow(loaded, "pid long, models string").toArrow().to_pandas()
    assert os.getpid() not in set(seen["pid"])  # scored outside the driver process
    assert seen["models"].str.contains("house-prices@1").any()  # a reused worker kept its loaded model


def test_parquet_in_parquet_out_through_spark_equals_the_local_engine(spark: Any, sqlite_settings: Settings,
                                                                     tmp_path: Path) -> None:
    """A classifier (text classes, probabilities), no --key (the key is the row's position), a file read by
    Spark as several partitions: the positions, keys and answers are the local engine's on the same file."""
    settings = sqlite_settings
    _publish_classifier(settings)
    data = _lake_rows(5000).astype({"a": object})
    data.iat[5, 0], data.iat[4100, 0] = "n/a", None
    data["a"] = data["a"].map(lambda v: v if v is None else str(v))  # a text column, as lakes have them
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), tmp_path / "in.parquet", row_group_size=500)
    assert spark.read.parquet(str(tmp_path / "in.parquet")).rdd.getNumPartitions() > 2

    local = score("churn", source=str(tmp_path / "in.parquet"), target="cancer", settings=settings, keep=("b",))
    target = str(tmp_path / "out" / "scores.parquet")
    on_spark = score("churn", source=str(tmp_path / "in.parquet"), target=target, settings=settings,
                     engine="spark", run_id="lake-1", keep=("b",))
    assert (on_spark.rows_scored, on_spark.rows_rejected, on_spark.row_count) == (4998, 2, 5000)
    assert (local.rows_scored, local.rows_rejected) == (4998, 2)

    ours = pd.read_parquet(target).sort_values("key").reset_index(drop=True)
    theirs = read_sql(settings.resolved_database_url, "SELECT * FROM cancer ORDER BY key")
    assert list(ours.columns) == list(theirs.columns)
    assert ours["key"].tolist() == theirs["key"].tolist() == [k for k in range(5000) if k not in (5, 4100)]
    assert ours["prediction"].tolist() == theirs["prediction"].tolist()
    assert set(ours["prediction"]) == {"yes", "no"} and ours["b"].tolist() == theirs["b"].tolist()
    assert [json.loads(p) for p in ours["probabilities"]] == \
        [p if isinstance(p, dict) else json.loads(p) for p in theirs["probabilities"]]
    assert set(ours["run_id"]) == {"lake-1"} and set(ours["version"]) == {1}
    rejected = pd.read_parquet(str(tmp_path / "out" / "scores_rejected.parquet"))
    assert _rejects(rejected) == _rejects(read_sql(settings.resolved_database_url, "SELECT * FROM cancer_rejected"))
    assert rejected["position"].tolist() == [5, 4100] and "row 5" in rejected["reason"][0]

    with pytest.raises(BatchError, match="already exists"):  # a new run never overwrites a path
        score("churn", source=str(tmp_path / "in.parquet"), target=target, settings=settings,
              engine="spark")
    get_engine(settings.resolved_database_url).dispose()
    with get_engine(settings.resolved_database_url).begin() as conn:
        conn.execute(text("UPDATE modelyard_batch_runs SET status = 'failed' WHERE run_id = 'lake-1'"))
    again = score("churn", source=str(tmp_path / "in.parquet"), target=target, settings=settings,
                  engine="spark", run_id="lake-1", keep=("b",))  # a failed run's rerun replaces its output
    assert again.resumed and again.rows_scored == 4998 and len(pd.read_parquet(target)) == 4998

    directory = tmp_path / "lake"  # a directory of Parquet files is one input
    directory.mkdir()
    pq.write_table(pa.Table.from_pandas(data.head(3000), preserve_index=False), directory / "a.parquet")
    pq.write_table(pa.Table.from_pandas(data.iloc[3000:], preserve_index=False), directory / "b.parquet")
    whole = score("churn", source=str(directory), target=str(tmp_path / "dir_out") + "/",
                  settings=settings, engine="spark")
    assert (whole.rows_scored, whole.rows_rejected) == (4998, 2)
    keys = pd.read_parquet(tmp_path / "dir_out")["key"]  # positions in Spark's read order (largest file first)
    assert keys.is_unique and set(keys) <= set(range(5000)) and len(keys) == 4998


def test_what_the_spark_engine_refuses_and_a_missing_pyspark(spark: Any, house_bundle: Path,
                                                             sqlite_settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    publish(house_bundle, sqlite_settings)
    write_table(sqlite_settings.resolved_database_url, "houses", houses_input(20))
    with pytest.raises(BatchError, match="which --engine spark writes"):
        score("house-prices", source="houses", target=str(tmp_path / "o.parquet"), settings=sqlite_settings)
    with pytest.raises(BatchError, match="a Parquet --to takes Parquet input"):
        score("house-prices", source="houses", target=str(tmp_path / "o.parquet"), settings=sqlite_settings,
              engine="spark")
    with pytest.raises(BatchError, match="--engine dask needs --cluster"):
        score("house-prices", source="houses", target="t", settings=sqlite_settings, engine="dask")
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if it were not installed
    with pytest.raises(BatchError, match=r"needs PySpark.*pip install 'modelyard\[spark\]'"):
        score("house-prices", source="houses", target="t", settings=sqlite_settings, engine="spark")


def test_the_cli_says_when_java_is_missing_or_cannot_start(house_bundle: Path, sqlite_settings: Settings,
                                                           tmp_path: Path) -> None:
    publish(house_bundle, sqlite_settings)
    write_table(sqlite_settings.resolved_database_url, "houses", houses_input(20))
    args = [sys.executable, "-m", "modelyard", "score", "house-prices", "--from", "houses", "--to", "t",
            "--engine", "spark", "--quiet"]
    env = {k: v for k, v in cli_env(sqlite_settings).items() if k != "JAVA_HOME"}
    no_java = subprocess.run(args, capture_output=True, text=True, timeout=120,
                             env={**env, "PATH": str(tmp_path)})  # no java (nor anything else) on the PATH
    assert no_java.returncode == 1 and "needs Java 17 or newer" in no_java.stderr, no_java.stderr
    assert "Traceback" not in no_java.stderr
    fake = tmp_path / "jdk" / "bin"
    fake.mkdir(parents=True)
    (fake / "java").write_text("#!/bin/sh\necho 'Error: not a JVM' >&2\nexit 1\n")
    (fake / "java").chmod(0o755)
    broken = subprocess.run(args, capture_output=True, text=True, timeout=120,
                            env={**env, "JAVA_HOME": str(tmp_path / "jdk")})
    assert broken.returncode == 1 and "Spark could not start" in broken.stderr, broken.stderr
    assert "Traceback" not in broken.stderr
    imports = subprocess.run([sys.executable, "-c", "import sys, modelyard.cli, modelyard.batch.runner; "
                              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')))"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert imports.stdout.strip() == "[]", imports.stderr  # the CLI pays for PySpark only with --engine spark

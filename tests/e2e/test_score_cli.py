"""`modelyard score` as a user runs it: killed mid-way with SIGKILL, resumed with the same run id, on its
own and on a Dask LocalCluster; exactly one row per key afterwards, values equal to in-process predictions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

import modelyard
from modelyard.config import Settings
from tests.batchstream_helpers import (
    house_bundle_once,
    houses_input,
    publish,
    read_sql,
    scalar,
    spoil,
    write_table,
)
from tests.conftest import SRC, cli_env, run_cli
from tests.support import wait_until

ROWS = 20_000
BAD = {17: ("area_sqm", "n/a"), 15_001: ("house_type", None)}


@pytest.fixture(scope="session")
def house_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_bundle_once(tmp_path_factory)


@pytest.fixture
def scored_input(house_bundle: Path, pg_settings: Settings):  # type: ignore[no-untyped-def]
    publish(house_bundle, pg_settings)
    frame = spoil(houses_input(ROWS, seed=8), BAD)
    write_table(pg_settings.resolved_database_url, "houses", frame)
    return pg_settings, frame


@pytest.fixture
def local_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real Dask scheduler with two worker processes that import this checkout's source."""
    from dask.distributed import LocalCluster

    monkeypatch.setenv("PYTHONPATH", str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                           host="127.0.0.1")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _kill_mid_way_then_resume(settings: Settings, frame, *extra: str) -> None:  # type: ignore[no-untyped-def]
    url = settings.resolved_database_url
    args = ["score", "house-prices", "--from", "SELECT * FROM houses", "--to", "scores", "--key", "id",
            "--chunk-size", "250", "--run-id", "nightly-1", "--quiet", *extra]
    proc = subprocess.Popen([sys.executable, "-m", "modelyard", *args], env=cli_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)

    def committed() -> int:
        try:
            return int(watcher.execute("SELECT count(*) FROM scores").fetchone()[0])  # type: ignore[index]
        except psycopg.errors.UndefinedTable:
            return 0

    try:
        wait_until(lambda: committed() >= 1000, timeout=120, interval=0.01,
                   what="the first chunks to be committed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):  # nobody reads them: close them, not the GC
            if pipe is not None:
                pipe.close()
    partial = scalar(url, "SELECT count(*) FROM scores")
    assert 0 < partial < ROWS - len(BAD), "the run must be killed mid-way"
    assert scalar(url, "SELECT status FROM modelyard_batch_runs WHERE run_id = 'nightly-1'") == "running"

    done = run_cli(*args, "--json", settings=settings, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["rows_scored"] == ROWS - len(BAD)
    assert summary["rows_rejected"] == len(BAD)

    out = read_sql(url, "SELECT id, prediction FROM scores ORDER BY id")
    assert out["id"].is_unique and len(out) == ROWS - len(BAD)  # exactly one row per key
    good = frame.drop(index=list(BAD))
    assert out["id"].tolist() == good["id"].tolist()
    expected = modelyard.load("house-prices", settings=settings).predict(good.drop(columns=["id"]))
    np.testing.assert_allclose(out["prediction"].to_numpy(), expected, rtol=1e-9)
    rejected = read_sql(url, "SELECT key, reason FROM scores_rejected ORDER BY position")
    assert rejected["key"].tolist() == [str(frame["id"].iloc[p]) for p in BAD]
    run = read_sql(url, "SELECT * FROM modelyard_batch_runs WHERE run_id = 'nightly-1'").iloc[0]
    assert run["status"] == "done" and run["rows_scored"] == ROWS - len(BAD) and run["row_count"] == ROWS
    assert run["details"]["attempts"] == 2 and run["details"]["resumed_at_row"] >= 1000
    assert run["details"]["cluster"] == (extra[1] if extra else None)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_with_exactly_one_row_per_key(scored_input) -> None:  # type: ignore[no-untyped-def]
    _kill_mid_way_then_resume(*scored_input)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_same_on_a_dask_local_cluster(scored_input, local_cluster: str) -> None:  # type: ignore[no-untyped-def]
    from dask.distributed import Client

    _kill_mid_way_then_resume(*scored_input, "--cluster", local_cluster)

    def models_loaded_here() -> list[tuple[str, int]]:
        from modelyard.batch import chunk

        return [k[2:] for k in chunk._models]

    with Client(local_cluster) as client:  # the workers, not the driver, loaded the model and scored
        loaded = client.run(models_loaded_here)
    assert [("house-prices", 1)] in loaded.values()


def test_score_cli_reports_a_missing_model_in_one_line(sqlite_settings: Settings) -> None:
    result = run_cli("score", "nope", "--from", "SELECT 1 AS id", "--to", "t", settings=sqlite_settings)
    assert result.returncode == 1 and "no model named 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_score_cli_reads_and_writes_another_sqlite_database_and_prints_a_summary(
        house_bundle: Path, sqlite_settings: Settings, tmp_path: Path) -> None:
    publish(house_bundle, sqlite_settings)
    other = f"sqlite:///{tmp_path / 'warehouse.db'}"
    write_table(other, "houses", spoil(houses_input(3000), {5: ("area_sqm", "?")}))
    result = run_cli("score", "house-prices@production", "--from", "houses", "--to", "scores", "--db", other,
                     "--key", "id", "--chunk-size", "1000", settings=sqlite_settings)
    assert result.returncode == 0, result.stderr
    assert "scored 2,999 rows into scores with house-prices v1, 1 rejected" in result.stdout
    assert "rows/s" in result.stderr and "rerun with --run-id" in result.stderr  # progress and run id
    assert scalar(other, "SELECT count(DISTINCT id) FROM scores") == 2999  # the key keeps its own name
    reason = scalar(other, "SELECT reason FROM scores_rejected")
    assert reason == "column 'area_sqm' row 5: '?' is not a number"
    registry_db = sqlite_settings.resolved_database_url
    assert scalar(registry_db, "SELECT status FROM modelyard_batch_runs") == "done"
    assert scalar(registry_db, "SELECT count(*) FROM sqlite_master WHERE name = 'scores'") == 0

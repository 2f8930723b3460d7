"""The Parquet log target: a shipper SIGKILLed mid-batch and run again leaves every record exactly once;
retention deletes whole days older than it and nothing else; the writer ships there when the settings say so."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.config import Settings
from modelyard.predlog import PredictionLogWriter, PredictionRecord, log_reader, segments
from modelyard.predlog.parquet import ParquetSink, partitions, prune
from modelyard.predlog.shipper import Shipper


def _ship_and_die(folder: Path, root: Path, kill_at: int) -> None:
    """In a forked child: ship, and SIGKILL ourselves just before the ``kill_at``-th part file is renamed
    into place (no cleanup runs; the kernel drops our segment locks)."""
    real_replace, calls = os.replace, [0]

    def replace(src: str | Path, dst: str | Path) -> None:
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]  # the child's own copy of the module
    Shipper("sqlite://", folder, sink=ParquetSink(root)).ship_folder()


def _raw_rows(root: Path) -> list[tuple[str, str]]:
    """Every row of every part file, not deduplicated (the reader would hide a duplicate)."""
    files = [str(p) for p in root.rglob("part-*.parquet")]
    query = "SELECT request_id, route FROM read_parquet(?, hive_partitioning=false)"
    return [tuple(r) for r in duckdb.connect().execute(query, [files]).fetchall()]  # type: ignore[misc]


def test_a_shipper_killed_mid_batch_and_run_again_writes_every_record_once(tmp_path: Path) -> None:
    folder, root = tmp_path / "spill", tmp_path / "predictions"
    folder.mkdir()
    expected = []
    for seg in range(3):  # each segment holds two models: two part files per segment
        records = [PredictionRecord(f"s{seg}-{i}", "a" if i % 2 else "b", 1, inputs=[{"x": i}], outputs=[i])
                   for i in range(20)]
        (folder / f"wal-7-{seg}-abc.jsonl").write_bytes(segments.encode(records))
        expected += [(r.request_id, "primary") for r in records]

    child = multiprocessing.get_context("fork").Process(target=_ship_and_die, args=(folder, root, 4))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert len(segments.segments(folder)) == 2  # the first was shipped and deleted; the second only in part
    assert len(list(root.rglob("part-*.parquet"))) == 3 and list(root.rglob(".part-*.tmp"))

    shipper = Shipper("sqlite://", folder, sink=ParquetSink(root))
    assert shipper.ship_folder() == 40
    rows = _raw_rows(root)
    assert sorted(rows) == sorted(expected)  # all 60, none twice
    assert not segments.segments(folder) and not list(root.rglob(".part-*.tmp"))


def _partition(root: Path, model: str, day: str) -> Path:
    folder = root / f"model={model}" / f"date={day}"
    folder.mkdir(parents=True)
    (folder / "part-x.parquet").write_bytes(b"")
    return folder


def test_retention_deletes_only_the_days_that_ended_longer_ago(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    now = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)
    old = [_partition(root, "a", "2026-05-06"), _partition(root, "b", "2026-05-01")]
    kept = [_partition(root, "a", "2026-05-07"),  # ended 05-08 00:00, 2d06h ago: not older than 3d
            _partition(root, "a", "2026-05-10"), _partition(root, "b", "2026-05-09")]
    stray = root / "model=a" / "notes"
    stray.mkdir()

    assert sorted(prune(root, timedelta(days=3), now=now)) == sorted(old)
    assert [p for p, _ in partitions(root)] == sorted(kept) and stray.is_dir()
    assert prune(root, timedelta(days=3), now=now) == []


def test_the_shipper_applies_the_retention_setting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".modelyard", log_target="parquet", log_retention="2d")
    root = settings.resolved_log_parquet_root
    old = _partition(root, "m", (datetime.now(UTC) - timedelta(days=5)).date().isoformat())
    writer = PredictionLogWriter.from_settings(settings).start()
    try:
        writer.commit_sync([PredictionRecord("now-1", "m", 1, inputs=[{"x": 1}], outputs=[2])])
        assert writer.flush(30)
    finally:
        writer.stop()
    assert not old.exists()
    assert [r.request_id for r in log_reader(settings).select("m")] == ["now-1"]


def test_log_prune_needs_the_parquet_target_and_a_retention(tmp_path: Path) -> None:
    home = str(tmp_path / ".modelyard")
    refused = CliRunner().invoke(app, ["log", "prune", "--older-than", "1d"],
                                 env={"MODELYARD_HOME": home, "MODELYARD_LOG_TARGET": "sql"})
    assert refused.exit_code == 1 and "MODELYARD_LOG_TARGET=parquet" in refused.output
    old = _partition(Settings(home=Path(home)).resolved_log_parquet_root, "m", "2020-01-01")
    env = {"MODELYARD_HOME": home, "MODELYARD_LOG_TARGET": "parquet", "MODELYARD_LOG_RETENTION": "30d"}
    done = CliRunner().invoke(app, ["log", "prune"], env=env)
    assert done.exit_code == 0, done.output
    assert "1 partitions older than 30d removed" in done.output and not old.exists()
    bad = CliRunner().invoke(app, ["log", "prune"], env={**env, "MODELYARD_LOG_RETENTION": "30 days"})
    assert bad.exit_code == 1 and "MODELYARD_LOG_RETENTION" in bad.output

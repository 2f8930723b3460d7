"""The prediction-log writer on SQLite: batches reach the database, an unreachable database fills the spill
file instead, and the spill is drained exactly once when the database returns or the next writer starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modelyard.predlog import PredictionLogWriter, PredictionRecord, get_records
from modelyard.predlog import spill as spill_mod
from modelyard.registry.db import get_engine
from modelyard.registry.tables import predictions


def records(n: int, prefix: str = "r") -> list[PredictionRecord]:
    return [PredictionRecord(request_id=f"{prefix}-{i}", model="m", version=1, inputs=[{"x": i, "y": None}],
                             outputs=[float(i) / 3], latency_ms=1.5, meta={"protocol": "test"})
            for i in range(n)]


def counts(url: str) -> dict[str, int]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id))
        return {r[0]: int(r[1]) for r in rows}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def test_records_reach_the_database_in_batches_and_stop_flushes_the_rest(db: str, tmp_path: Path) -> None:
    pending: list[int] = []
    writer = PredictionLogWriter(db, tmp_path / "spill", batch_size=100, flush_interval=30,
                                 on_pending=pending.append).start()
    writer.submit_many(records(1234))
    writer.stop()
    assert counts(db) == {f"r-{i}": 1 for i in range(1234)}
    assert writer.written == 1234 and writer.pending == 0 and pending[-1] == 0
    assert not spill_mod.segments(tmp_path / "spill")
    (stored,) = get_records(get_engine(db), "r-7")
    assert stored.inputs == [{"x": 7, "y": None}] and stored.outputs == [7 / 3]
    assert stored.meta == {"protocol": "test"}


def test_flush_waits_until_everything_is_written(db: str, tmp_path: Path) -> None:
    with PredictionLogWriter(db, tmp_path / "spill", flush_interval=0.05) as writer:
        writer.submit_many(records(10))
        assert writer.flush(10)
        assert len(counts(db)) == 10


def test_unreachable_database_spills_then_drains_exactly_once(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"  # SQLite cannot open a file in a missing folder: "unable to open database"
    url = f"sqlite:///{folder / 'log.db'}"
    spilled: list[int] = []
    writer = PredictionLogWriter(url, tmp_path / "spill", batch_size=50, flush_interval=0.05,
                                 retry_interval=0.1, on_spilled=spilled.append).start()
    writer.submit_many(records(120))
    assert not writer.flush(1.0)  # cannot finish while the database is away
    segments = spill_mod.segments(tmp_path / "spill")
    assert len(segments) == 1 and sum(spilled) == 120 and writer.pending == 120
    folder.mkdir()  # the database comes back
    writer.submit_many(records(30, prefix="later"))
    assert writer.flush(20)
    writer.stop()
    logged = counts(url)
    assert len(logged) == 150 and set(logged.values()) == {1}
    assert not spill_mod.segments(tmp_path / "spill")


def test_stop_while_unreachable_spills_everything_and_the_next_writer_drains_it(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    url = f"sqlite:///{folder / 'log.db'}"
    first = PredictionLogWriter(url, tmp_path / "spill", flush_interval=30).start()
    first.submit_many(records(75))
    first.stop()
    (segment,) = spill_mod.segments(tmp_path / "spill")
    assert spill_mod.count_records(segment) == 75 and first.spilled == 75
    folder.mkdir()
    second = PredictionLogWriter(url, tmp_path / "spill", flush_interval=0.05).start()
    assert second.pending == 75  # the orphan segment is counted as soon as the writer starts
    assert second.flush(20)
    second.stop()
    assert len(counts(url)) == 75 and not spill_mod.segments(tmp_path / "spill")


def test_a_segment_held_by_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    url = f"sqlite:///{folder / 'log.db'}"
    holder = PredictionLogWriter(url, tmp_path / "spill", flush_interval=0.05, retry_interval=60).start()
    holder.submit_many(records(5, prefix="held"))
    holder.flush(0.5)
    (segment,) = spill_mod.segments(tmp_path / "spill")
    with spill_mod.claim(segment) as mine:
        assert not mine  # flock held by the live writer
    assert spill_mod.count_unheld(tmp_path / "spill") == 0
    holder.stop()
    with spill_mod.claim(segment) as mine:
        assert mine


def test_a_torn_last_line_is_skipped_and_the_rest_is_drained(db: str, tmp_path: Path) -> None:
    folder = tmp_path / "spill"
    folder.mkdir()
    good = b"".join(spill_mod.dumps_record(r) + b"\n" for r in records(3, prefix="torn"))
    (folder / f"spill-{os.getpid()}-0-abc.jsonl").write_bytes(good + b'{"request_id": "half')
    writer = PredictionLogWriter(db, folder, flush_interval=0.05).start()
    assert writer.flush(20)
    writer.stop()
    assert set(counts(db)) == {"torn-0", "torn-1", "torn-2"}


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_written(db: str, tmp_path: Path) -> None:
    batch = records(4, prefix="ok")
    batch.insert(2, PredictionRecord(request_id="poison", model=None, version=1))  # type: ignore[arg-type]
    writer = PredictionLogWriter(db, tmp_path / "spill", flush_interval=30).start()
    writer.submit_many(batch)
    writer.stop()
    assert set(counts(db)) == {"ok-0", "ok-1", "ok-2", "ok-3"}
    (rejected,) = (tmp_path / "spill").glob("rejected-*.jsonl")
    assert b"poison" in rejected.read_bytes()
    assert not spill_mod.segments(tmp_path / "spill")


def test_nan_and_numpy_values_are_stored_as_json(db: str, tmp_path: Path) -> None:
    import numpy as np

    record = PredictionRecord(request_id="nan", model="m", version=1, inputs=[{"x": float("nan")}],
                              outputs=np.array([1.5, np.inf]).tolist(), meta={"n": np.int64(3)})
    with PredictionLogWriter(db, tmp_path / "spill", flush_interval=0.05) as writer:
        writer.submit(record)
        assert writer.flush(10)
    (stored,) = get_records(get_engine(db), "nan")
    assert stored.inputs == [{"x": None}] and stored.outputs == [1.5, None] and stored.meta == {"n": 3}

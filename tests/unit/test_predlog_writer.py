"""The prediction-log writer on SQLite: records are written ahead to a segment, shipped to the database in
batches, kept in segments while the database is unreachable, and shipped exactly once when it returns or the
next writer starts. Commits are grouped, durable before they return, and refused when the folder fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import func, select

from modelyard.errors import LogUnavailableError
from modelyard.predlog import LogHooks, PredictionLogWriter, PredictionRecord, get_records
from modelyard.predlog import segments as spill_mod
from modelyard.predlog.records import Route
from modelyard.predlog.shipper import Shipper
from modelyard.predlog.store import SqlSink
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
                                 hooks=LogHooks(on_pending=pending.append)).start()
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
                                 retry_interval=0.1, hooks=LogHooks(on_spilled=spilled.append)).start()
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
    holder = PredictionLogWriter(url, tmp_path / "spill", flush_interval=30, retry_interval=60).start()
    holder.commit_sync(records(5, prefix="held"))  # the open segment: held until rotated or stopped
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
    (folder / f"wal-{os.getpid()}-0-abc.jsonl").write_bytes(good + b'{"request_id": "half')
    (folder / "spill-1-0-old.jsonl").write_bytes(  # a spill file of an earlier version is shipped too
        spill_mod.dumps_record(records(1, prefix="old")[0]) + b"\n")
    writer = PredictionLogWriter(db, folder, flush_interval=0.05).start()
    assert writer.flush(20)
    writer.stop()
    assert set(counts(db)) == {"torn-0", "torn-1", "torn-2", "old-0"}


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


def test_refused_records_are_found_by_halving_their_batch(db: str, tmp_path: Path) -> None:
    writes: list[int] = []

    class Counting(SqlSink):
        def write(self, segment_id: str, records: Sequence[PredictionRecord]) -> None:
            writes.append(len(records))
            super().write(segment_id, records)

    batch = records(1000, prefix="ok")
    for i in (17, 640):  # model None: the table refuses them (NOT NULL)
        batch[i] = PredictionRecord(request_id=f"poison-{i}", model=None, version=1)  # type: ignore[arg-type]
    folder = tmp_path / "spill"
    folder.mkdir()
    (folder / "wal-1-1-abc.jsonl").write_bytes(spill_mod.encode(batch))
    shipper = Shipper(db, folder, sink=Counting(db, batch_size=100))
    assert shipper.ship_folder() == 1000
    assert set(counts(db)) == {r.request_id for r in batch} - {"poison-17", "poison-640"}
    # ten batches of 100, and halving the two refused ones' batches: about 2 log2(100) writes each, not 100
    assert writes[:2] == [100, 50] and len(writes) <= 10 + 2 * 2 * 7
    (rejected,) = folder.glob("rejected-*.jsonl")
    assert rejected.read_bytes().count(b"poison") == 2 and not spill_mod.segments(folder)


def test_nan_and_numpy_values_are_stored_as_json(db: str, tmp_path: Path) -> None:
    import numpy as np

    record = PredictionRecord(request_id="nan", model="m", version=1, inputs=[{"x": float("nan")}],
                              outputs=np.array([1.5, np.inf]).tolist(), meta={"n": np.int64(3)})
    with PredictionLogWriter(db, tmp_path / "spill", flush_interval=0.05) as writer:
        writer.submit(record)
        assert writer.flush(10)
    (stored,) = get_records(get_engine(db), "nan")
    assert stored.inputs == [{"x": None}] and stored.outputs == [1.5, None] and stored.meta == {"n": 3}


@pytest.mark.parametrize("ts", [
    datetime(2026, 5, 1, 12, 0, tzinfo=UTC), datetime(2026, 5, 1, 12, 0, 0, 250, tzinfo=UTC),
    datetime(2026, 5, 1, 12, 0, 1), datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(seconds=3725)))])  # the last one: seconds in the offset
def test_a_segment_line_is_the_records_to_json_and_reads_back_equal(ts: datetime, tmp_path: Path) -> None:
    record = PredictionRecord(request_id="a", model="m", version=2, route=Route.STREAM,
                              inputs=[{"x": np.float32(1.5), "y": None, 3: "k"}], outputs=[np.int64(4)],
                              latency_ms=float("nan"), meta={"p": np.array([0.25, 0.75]), "when": ts.date()},
                              ts=ts)
    line = spill_mod.dumps_record(record)
    assert line == orjson.dumps(record.to_json(), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                                default=str)
    assert spill_mod.encode([record]) == line + b"\n" and spill_mod.encode([record, record]) == (line + b"\n") * 2
    path = tmp_path / "wal-1-1-x.jsonl"
    path.write_bytes(spill_mod.encode([record, record]))
    back = spill_mod.read_records(path)
    assert len(back) == 2 and back[0].ts == ts and back[0].route == "stream" and back[0].latency_ms is None
    assert back[0].inputs == [{"x": 1.5, "y": None, "3": "k"}] and back[0].meta == {"p": [0.25, 0.75],
                                                                                    "when": str(ts.date())}


def test_commit_is_on_disk_before_it_returns_and_concurrent_commits_share_one_write(
    db: str, tmp_path: Path,
) -> None:
    writer = PredictionLogWriter(db, tmp_path / "wal", flush_interval=30).start()  # no tick: nothing shipped

    async def many() -> None:
        await asyncio.gather(*(writer.commit([r]) for r in records(50, prefix="g")))

    asyncio.run(many())
    (segment,) = spill_mod.segments(tmp_path / "wal")
    assert {r.request_id for r in spill_mod.read_records(segment)} == {f"g-{i}" for i in range(50)}
    assert writer.group_writes == 1  # one os.write for the 50 requests of one loop iteration
    assert not Path(db.removeprefix("sqlite:///")).exists()  # nothing shipped yet: the segment has it all
    writer.stop()
    assert counts(db) == {f"g-{i}": 1 for i in range(50)} and not spill_mod.segments(tmp_path / "wal")


def test_a_lone_commit_is_written_at_once_and_refused_at_once(db: str, tmp_path: Path) -> None:
    """``alone`` (no other request in flight): at ``process`` durability the record is in the segment when
    ``commit`` returns, without a turn of the loop (the coroutine finishes on its first step); a folder that
    cannot be written refuses it the same way. At ``machine`` durability the group's fdatasync thread still
    writes it."""

    def first_step(coro: Any) -> bool:
        """True if the coroutine finished without suspending."""
        try:
            coro.send(None)
        except StopIteration:
            return True
        coro.close()
        return False

    writer = PredictionLogWriter(db, tmp_path / "wal", flush_interval=30).start()
    assert first_step(writer.commit(records(1, prefix="alone"), alone=True))
    (segment,) = spill_mod.segments(tmp_path / "wal")
    assert [r.request_id for r in spill_mod.read_records(segment)] == ["alone-0"] and writer.group_writes == 0
    writer.stop()
    assert set(counts(db)) == {"alone-0"}

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the segment folder's parent should be")
    failing = PredictionLogWriter(db, blocker / "wal", flush_interval=30).start()
    with pytest.raises(LogUnavailableError):
        first_step(failing.commit(records(1, prefix="refused"), alone=True))
    assert not failing.healthy
    failing.stop()

    machine = PredictionLogWriter(db, tmp_path / "wal-m", durability="machine", flush_interval=30).start()

    async def one() -> bool:
        coro = machine.commit(records(1, prefix="machine"), alone=True)
        if first_step(coro):
            return True
        await machine.commit(records(1, prefix="machine"), alone=True)
        return False

    assert not asyncio.run(one())  # waited for the fdatasync thread
    machine.stop()


def test_machine_durability_fdatasyncs_each_group_once(db: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    writer = PredictionLogWriter(db, tmp_path / "wal", durability="machine", flush_interval=30).start()

    async def many() -> None:
        await asyncio.gather(*(writer.commit([r]) for r in records(40, prefix="m")))

    asyncio.run(many())
    assert 1 <= len(synced) < 40  # grouped: far fewer fdatasyncs than commits
    (segment,) = spill_mod.segments(tmp_path / "wal")
    assert spill_mod.count_records(segment) == 40
    writer.stop()
    assert len(counts(db)) == 40


def test_a_segment_shipped_twice_or_holding_a_repeated_request_id_adds_no_duplicate(
    db: str, tmp_path: Path,
) -> None:
    folder = tmp_path / "wal"
    folder.mkdir()
    batch = records(5, prefix="dup") + records(2, prefix="dup")  # dup-0 and dup-1 twice in one segment
    data = b"".join(spill_mod.dumps_record(r) + b"\n" for r in batch)
    (folder / "wal-1-1-aaa.jsonl").write_bytes(data)
    with PredictionLogWriter(db, folder, flush_interval=0.05) as writer:
        assert writer.flush(20)
    (folder / "wal-1-1-aaa.jsonl").write_bytes(data)  # as if a shipper died after inserting, before deleting
    with PredictionLogWriter(db, folder, flush_interval=0.05) as writer:
        assert writer.flush(20)
    assert counts(db) == {f"dup-{i}": 1 for i in range(5)}
    with get_engine(db).connect() as conn:
        assert conn.execute(select(func.count()).select_from(predictions)).scalar() == 5


def test_an_unwritable_folder_refuses_commits_until_it_is_writable_again(db: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the segment folder's parent should be")  # fails for root too
    failures: list[int] = []
    writer = PredictionLogWriter(db, blocker / "wal", flush_interval=0.05, retry_after=7,
                                 hooks=LogHooks(on_write_failure=lambda: failures.append(1))).start()
    with pytest.raises(LogUnavailableError) as info:
        asyncio.run(writer.commit(records(1, prefix="refused")))
    assert info.value.retry_after == 7 and info.value.status_code == 503
    with pytest.raises(LogUnavailableError):
        writer.commit_sync(records(1, prefix="refused-sync"))
    assert not writer.healthy and writer.failing and len(failures) == 2
    blocker.unlink()  # the folder can be made again: the tick's probe notices
    from tests.integration.serving import wait_until

    wait_until(lambda: writer.healthy, 10, "the writer to find the folder writable again")
    asyncio.run(writer.commit(records(1, prefix="after")))
    writer.stop()
    assert set(counts(db)) == {"after-0"}  # nothing refused was kept


def test_serve_on_failure_answers_and_ships_straight_to_the_database(db: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    unlogged: list[int] = []
    writer = PredictionLogWriter(db, blocker / "wal", on_failure="serve", flush_interval=0.05,
                                 hooks=LogHooks(on_served_unlogged=unlogged.append)).start()
    asyncio.run(writer.commit(records(3, prefix="served")))
    assert writer.healthy and writer.failing and sum(unlogged) == 3
    assert writer.flush(20)
    writer.stop()
    assert set(counts(db)) == {"served-0", "served-1", "served-2"}


def test_with_ship_in_child_a_child_process_ships_and_stop_ships_the_rest(db: str, tmp_path: Path) -> None:
    gone = PredictionLogWriter(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", tmp_path / "spill", flush_interval=30)
    gone.start()
    gone.submit_many(records(40, prefix="orphan"))
    gone.stop()  # its database unreachable: the segment stays behind, for the next writer
    writer = PredictionLogWriter(db, tmp_path / "spill", flush_interval=0.05, ship_in_child=True).start()
    child = writer._ship_child
    assert child is not None and child.pid != os.getpid()
    assert writer.pending == 40  # the orphan segment, shipped by the child
    writer.commit_sync(records(300))
    assert writer.flush(30)
    assert writer.shipper.shipped == 0  # not by this process
    assert counts(db) == {**{f"r-{i}": 1 for i in range(300)}, **{f"orphan-{i}": 1 for i in range(40)}}
    writer.commit_sync(records(25, prefix="last"))
    writer.stop()  # the last segment is closed, then shipped by the child's last pass
    assert child._proc.poll() == 0
    assert len(counts(db)) == 365 and not spill_mod.segments(tmp_path / "spill")


def test_a_shipping_child_tells_the_hooks_what_a_shipping_thread_would(tmp_path: Path) -> None:
    """With the database unreachable, the child's failed ships and held-back records reach this process's
    ``on_ship_error`` and ``on_spilled`` (the server's metrics), as they do from the writer's own thread."""
    from tests.support import wait_until

    errors: list[None] = []
    spilled: list[int] = []
    url = f"sqlite:///{tmp_path / 'missing' / 'log.db'}"  # a folder that does not exist: unreachable
    writer = PredictionLogWriter(url, tmp_path / "spill", flush_interval=0.05, retry_interval=0.05,
                                 ship_in_child=True,
                                 hooks=LogHooks(on_ship_error=lambda: errors.append(None),
                                                on_spilled=spilled.append)).start()
    writer.commit_sync(records(30, prefix="away"))
    with contextlib.suppress(AssertionError):  # judged below, with what each hook got
        wait_until(lambda: errors and sum(spilled) >= 30, 30, "the child's events at the hooks", interval=0.02)
    writer.stop(timeout=10)
    assert errors, "the child's failed ships never reached on_ship_error"
    assert sum(spilled) == 30 and writer.spilled == 30  # each held-back record told once
    assert spill_mod.count_unheld(tmp_path / "spill") == 30  # still on disk, for the next shipper


def test_a_shipping_child_dies_with_its_process_and_leaves_the_segments(db: str, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    program = (f"from modelyard.predlog import PredictionLogWriter as W; from tests.unit.test_predlog_writer "
               f"import records; w = W({db!r}, {str(tmp_path / 'spill')!r}, flush_interval=60, "
               f"ship_in_child=True).start(); w.commit_sync(records(10)); print(w._ship_child.pid, flush=True); "
               f"import time; time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the shipping child outlived its process")
    assert counts(db) == {} and spill_mod.count_unheld(tmp_path / "spill") == 10  # the next shipper's


def test_a_short_write_is_finished_before_append_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.write`` may write less than asked (a signal, a nearly full disk): the rest follows, in order."""
    real_write = os.write
    calls: list[int] = []

    def at_most_100_bytes(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:100]))

    segment = spill_mod.Segment(tmp_path)
    monkeypatch.setattr(spill_mod.os, "write", at_most_100_bytes)
    data = spill_mod.encode(records(3))
    segment.append(data, 3)
    monkeypatch.undo()
    assert len(calls) == -(-len(data) // 100) and segment.size == len(data)
    segment.close()
    written = [p for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    assert len(written) == 1 and written[0].read_bytes() == data
    assert [r.request_id for r in spill_mod.read_records(written[0])] == ["r-0", "r-1", "r-2"]


def test_a_new_segment_cannot_be_claimed_before_its_writer_holds_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's shipper scans the folder at any moment: a segment it could claim between its
    creation and its writer's lock would be shipped empty and unlinked, and the records written after it
    lost (seen once in CI as the last 20 of 200 gRPC answers missing from the log)."""
    real_flock = spill_mod.fcntl.flock
    claimed: list[Path] = []

    def shipper_runs_first(fd: int, operation: int) -> None:
        if operation == spill_mod.fcntl.LOCK_EX and not claimed:  # the writer's lock, about to be taken
            for path in spill_mod.segments(tmp_path):  # what another process's ship pass would do now
                with spill_mod.claim(path) as mine:
                    if mine:
                        claimed.append(path)
                        path.unlink()
            claimed.append(tmp_path)  # once
        real_flock(fd, operation)

    monkeypatch.setattr(spill_mod.fcntl, "flock", shipper_runs_first)
    segment = spill_mod.Segment(tmp_path)
    segment.append(spill_mod.encode(records(3)), 3)
    monkeypatch.undo()
    assert claimed == [tmp_path], "the shipper claimed a segment its writer was still opening"
    path = segment.close()
    assert path is not None and [r.request_id for r in spill_mod.read_records(path)] == ["r-0", "r-1", "r-2"]

"""Where each prediction-log target stops keeping up on this machine: SQL on SQLite, SQL on PostgreSQL, Parquet.

    python benchmarks/log_targets.py [--replicas 4] [--rates 1000,2000,4000,8000,16000,32000] [--duration 6]
                                     [--pg-url postgresql://postgres@127.0.0.1:5432/test] [--targets ...]

``--replicas`` writer processes stand for that many serving replicas: each appends one-row house-price
records to its own write-ahead segment (the real ``segments.Segment``, rotated every 0.5 s as the server's
writer does) at ``rate / replicas`` records/s. One ``Shipper`` (the server's, with the target's sink) ships
the folder as fast as it can. For each offered rate, the targets are measured one after the other (order
alternating by step, so a busy moment of the shared machine falls on all of them alike), each with a fresh
store: records/s offered (actually written by the writers), records/s shipped in the same seconds, and the
backlog's growth (records waiting in segments, end minus start, per second). A target "keeps up" at a step
when it ships at least 95% of what is written and its backlog grows by less than 5% of it (both measured
from the first second on, at the same phase of the segments' rotation); once it ships less than 80% it is
saturated and not offered more. The summary prints each target's highest rate kept up with and its shipping
capacity (the most records/s shipped at any step), and the capacity ratios between targets, all from
this one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelyard.predlog import PredictionRecord, segments  # noqa: E402
from modelyard.predlog.parquet import ParquetSink  # noqa: E402
from modelyard.predlog.shipper import Shipper  # noqa: E402
from modelyard.predlog.store import LogSink, SqlSink  # noqa: E402

ROW = {"area_sqm": 120.0, "bedrooms": 3, "bathrooms": 2, "year_built": 1990, "year_renovated": None,
       "lot_sqm": 300.0, "garage_spaces": 1, "floors": 2, "distance_center_km": 5.5, "school_rating": 7.5,
       "crime_index": 2.1, "neighborhood": "Harbor", "house_type": "detached", "condition": "good",
       "heating": "gas", "has_pool": "no"}
ROTATE = 0.5  # seconds between segment rotations (the server's MODELYARD_LOG_FLUSH_INTERVAL)


def _template() -> tuple[bytes, bytes]:
    """One record's JSON line, split around its request id (the writers fill in the id and the time)."""
    line = segments.dumps_record(PredictionRecord(
        request_id="@RID@", model="house-prices", version=1, inputs=[ROW], outputs=[312456.25], n_rows=1,
        latency_ms=1.25, meta={"routing_key": None}, ts=datetime(2000, 1, 1, tzinfo=UTC)))
    return line.replace(b"2000-01-01T00:00:00+00:00", b"@TS@"), b"@RID@"


def writer(folder: Path, rate: float, duration: float, wid: int, start_at: float, written: Any) -> None:
    """A replica's write-ahead log: ``rate`` records/s into its own segments, rotated every ROTATE s."""
    template, rid = _template()
    segment = segments.Segment(folder)
    tag = uuid.uuid4().hex[:8]
    n = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end, next_rotation = start_at + duration, start_at + ROTATE
    while (now := time.time()) < end:
        due = int((now - start_at) * rate) - n
        if due > 0:
            line = template.replace(b"@TS@", datetime.now(UTC).isoformat().encode())
            segment.append(b"\n".join(line.replace(rid, f"{tag}-{wid}-{n + i}".encode()) for i in range(due))
                           + b"\n", due)
            n += due
        if now >= next_rotation:
            segment.close()
            next_rotation += ROTATE
        time.sleep(0.005)
    segment.close()
    written.value = n


@dataclass
class Step:
    target: str
    offered: float
    written: float
    shipped: float
    backlog_growth: float
    backlog_end: int
    files: int = 0

    @property
    def keeps_up(self) -> bool:
        return self.shipped >= 0.95 * self.written and self.backlog_growth < 0.05 * self.written


def _backlog(folder: Path) -> int:
    return segments.backlog(folder).records


def measure(name: str, make_sink: Callable[[Path], LogSink], rate: float, replicas: int, duration: float,
            work: Path) -> Step:
    folder = work / "spill"
    store = work / "store"
    folder.mkdir(parents=True)
    sink = make_sink(store)
    shipper = Shipper("sqlite://", folder, sink=sink, retry_interval=0.2)
    shipper.ship_folder()  # connect and migrate before the clock starts
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 0.5
    counters = [ctx.Value("q", 0) for _ in range(replicas)]
    procs = [ctx.Process(target=writer, args=(folder, rate / replicas, duration, i, start_at, counters[i]))
             for i in range(replicas)]
    for p in procs:
        p.start()
    shipped: list[tuple[float, int]] = []
    stop = threading.Event()

    def ship() -> None:
        while not stop.is_set():
            if not shipper.ship_folder():
                time.sleep(0.02)
            shipped.append((time.time(), shipper.shipped))

    thread = threading.Thread(target=ship, daemon=True)
    thread.start()
    # The window: from 1 s in (warmed up) to the end, both ends at the same phase of the segments' rotation
    # (a quarter into it), so the open segments, which nobody can ship yet, weigh the same at both ends.
    t1, t2 = start_at + 1 + ROTATE / 2, start_at + duration - ROTATE / 2
    _sleep_until(t1)
    backlog_start, before = _backlog(folder), shipper.shipped
    _sleep_until(t2)
    backlog_end, after = _backlog(folder), shipper.shipped
    window = t2 - t1
    for p in procs:
        p.join(30)
    stop.set()
    thread.join(60)
    if shipper.last_error:
        print(f"    ({name}: last ship error: {shipper.last_error})", flush=True)
    shipper.dispose()
    written = sum(c.value for c in counters)
    files = len(list(store.rglob("part-*.parquet"))) if store.exists() else 0
    return Step(name, rate, written / duration, (after - before) / window, (backlog_end - backlog_start) / window,
                backlog_end, files)


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def _pg_database(admin_url: str) -> tuple[str, Callable[[], None]] | None:
    try:
        import psycopg

        name = f"modelyard_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL at {admin_url} unavailable ({exc}); skipping it", flush=True)
        return None
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        from modelyard.registry.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4, help="Writer processes (serving replicas).")
    parser.add_argument("--rates", default="1000,2000,4000,8000,16000,32000",
                        help="Offered records/s (all replicas together), in increasing order.")
    parser.add_argument("--duration", type=float, default=6.0,
                        help="Seconds per measurement (the first second is warm-up; at least 3).")
    parser.add_argument("--targets", default="sqlite,postgres,parquet")
    parser.add_argument("--pg-url", default=os.environ.get("MODELYARD_TEST_PG",
                                                           "postgresql://postgres@127.0.0.1:5432/test"),
                        help="A PostgreSQL database to create the benchmark's own database from.")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    args.duration = max(3.0, round(args.duration / ROTATE) * ROTATE)
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-logbench-"))
    cleanups: list[Callable[[], None]] = []
    sinks: dict[str, Callable[[Path], LogSink]] = {}
    for name in [t.strip() for t in args.targets.split(",")]:
        if name == "sqlite":
            sinks["SQL on SQLite"] = lambda store: SqlSink(f"sqlite:///{store.parent / 'log.db'}")
        elif name == "postgres":
            found = _pg_database(args.pg_url)
            if found is not None:
                pg_url, drop = found
                cleanups.append(drop)

                def pg_sink(store: Path, url: str = pg_url) -> LogSink:
                    from sqlalchemy import text

                    from modelyard.registry.db import log_engine, migrate

                    engine = log_engine(url)
                    migrate(engine)
                    with engine.begin() as conn:  # each step starts from an empty table
                        conn.execute(text("TRUNCATE modelyard_predictions"))
                    return SqlSink(url, engine=engine)

                sinks["SQL on PostgreSQL"] = pg_sink
        elif name == "parquet":
            sinks["Parquet"] = lambda store: ParquetSink(store)
    print(f"{args.replicas} writer processes, segments rotated every {ROTATE}s, one shipper; "
          f"{args.duration:.0f}s per step; {os.cpu_count()} cores (shared: figures are noisy)", flush=True)
    results: dict[str, list[Step]] = {name: [] for name in sinks}
    behind: set[str] = set()
    try:
        for i, rate in enumerate(rates):
            order = list(sinks) if i % 2 == 0 else list(sinks)[::-1]
            for name in order:
                if name in behind:
                    continue
                work = tmp / f"{name.replace(' ', '-')}-{int(rate)}"
                step = measure(name, sinks[name], rate, args.replicas, args.duration, work)
                shutil.rmtree(work, ignore_errors=True)
                results[name].append(step)
                extra = f"  {step.files} part files" if step.files else ""
                print(f"  {name:<18} offered {rate:8.0f}/s  written {step.written:8.0f}/s  shipped "
                      f"{step.shipped:8.0f}/s ({step.shipped / max(step.written, 1):5.2f}x)  backlog "
                      f"{step.backlog_growth:+8.0f}/s  ({step.backlog_end} waiting){extra}"
                      f"{'' if step.keeps_up else '  <- falls behind'}", flush=True)
                if step.shipped < 0.8 * step.written:  # saturated (not a noisy step): offer it no more
                    behind.add(name)
    finally:
        for drop in cleanups:
            drop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'target':<18} | {'keeps up with':>14} | {'capacity (most shipped)':>24}")
    capacity: dict[str, float] = {}
    for name, steps in results.items():
        kept = [s.written for s in steps if s.keeps_up]
        capacity[name] = max((s.shipped for s in steps), default=0.0)
        ceiling = f"{max(kept):10.0f} r/s" if kept else "   below all"
        more = "" if name in behind else " (never saturated: offer more with --rates)"
        print(f"{name:<18} | {ceiling:>14} | {capacity[name]:20.0f} r/s{more}")
    names = [n for n in capacity if capacity[n]]
    for a in names:
        for b in names:
            if a < b:
                print(f"capacity {a} / {b}: {capacity[a] / capacity[b]:.2f}x")


if __name__ == "__main__":
    main()

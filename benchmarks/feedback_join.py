"""``benchmarks/feedback_join.py [--rows N] [--by-key] [--in-python]``: join N outcomes to N logged
predictions on PostgreSQL, rows/s.

A fresh database (dropped at the end) gets N one-row prediction records (``modelyard_predictions``, made in
the database by ``generate_series`` so the setup is not what is measured), then the outcomes are joined the
way ``modelyard feedback --request-ids`` and ``POST /v1/feedback`` join them: ``predlog.outcomes.
join_outcomes`` in chunks of ``--chunk`` outcomes, which on PostgreSQL is ``registry.outcome_join``: COPY
the chunk into a temporary table, one statement joins it to the log, inserts the new outcome rows and
counts them. A second pass over the same outcomes measures the duplicate path (nothing new stored).
``--by-key`` names each outcome by the entity key of its inputs (``{"id": g}``, a 2 h window) instead of by
request id; ``--in-python`` joins record by record in Python (the SQLite path) for a before/after in one
run. Goal (issue 16): at least 100k rows/s.

    python benchmarks/feedback_join.py --rows 1000000

Figures, from the shared 2-core machine with the other helpers' work on it (PostgreSQL 15 with its default
128 MB of shared buffers; load averages beside each; wall-clock figures move by a third from run to run, so
the CPU seconds of this process and of the database's backends are printed too):

- ``--rows 1000000``, 2026-12-02, main before (0005) and after this branch (migration 0006: bytewise outcome
  keys; the statement's ``src`` inlined, the row's element taken once, one window over the join instead of one
  per outcome; COPY of the used columns only), interleaved: load 3-4, before 61,195-82,767 rows/s (PostgreSQL
  12.9-15.9 s CPU, this process 1.8-2.3 s), after 82,610-97,538 rows/s (11.5-14.6 s, 1.5-1.9 s); load 1.1-1.4,
  before 126,307 / 136,461 rows/s (11.6 / 11.5 s), after 146,935 / 121,351 rows/s (10.8 / 12.3 s). With
  ``--in-flight 1``: before 70,909 / 67,967 rows/s (12.1 s each), after 69,186 / 69,680 (11.0 / 11.2 s).
  The goal is met on a quiet machine, before and after; under the other helpers' load it is not.
- earlier, ``--rows 1000000``: join 26,045 rows/s (38.4 s; CPU: this process 2.0 s, PostgreSQL 16.4 s), duplicates
  40,278 rows/s (PostgreSQL 9.3 s CPU), load 6.7-7.7; another run 23,097 / 57,844 rows/s (load 8.0-10.2).
  Before (join in Python): 757 rows/s. The goal is not met, and not within reach of this schema here: the
  database alone spends about 16 us of CPU per outcome (so about 54k rows/s if nothing else ran), half of
  it inserting into ``modelyard_outcomes`` and its three indexes, most of the rest the index lookups in the
  log and in the outcomes.
- ``--rows 100000``: in the database 41,611 / 53,937 rows/s (load 8.5-9.0); ``--in-python`` 12,261 /
  20,761 rows/s (4.0 s of CPU in Python; load 6.3-6.6).
- ``--rows 100000 --by-key``: in the database 13,224 / 14,562 rows/s (load 6.0-6.3); ``--in-python``
  4,469 / 4,307 rows/s (an earlier run, load 5.9-9.3). Every chunk reads the whole window of logged inputs:
  the cost grows with the window, not with the chunk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import psycopg  # noqa: E402
from tests.integration.serving import fresh_pg_database  # noqa: E402

import modelyard.predlog.outcomes as outcomes_module  # noqa: E402
from modelyard.predlog.outcomes import JOINS_IN_FLIGHT, Outcome, join_chunks  # noqa: E402
from modelyard.registry.db import get_engine  # noqa: E402

ADMIN = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MODEL = "bench-houses"


def _task_of(model: str, version: int) -> tuple[str, list[object] | None]:
    return "regression", None


def _server_cpu(database: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends serving ``database``, when the server runs on this
    machine (``/proc``): on a shared machine, what the join cost the database apart from what it waited."""
    total, tick, found = 0.0, os.sysconf("SC_CLK_TCK"), False
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f" {database} ".encode() not in f.read().replace(b"\0", b" ") + b" ":
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total, found = total + (int(fields[11]) + int(fields[12])) / tick, True
    return total if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--by-key", action="store_true",
                        help="name each outcome by the entity key of its inputs ({'id': g}) within a 2 h window, "
                             "as `modelyard feedback --key id` does, instead of by request id")
    parser.add_argument("--in-python", action="store_true",
                        help="join in Python, record by record (the SQLite path), for comparison")
    parser.add_argument("--in-flight", type=int, default=JOINS_IN_FLIGHT,
                        help="chunks joined at once, each on its own connection (1: one after the other)")
    args = parser.parse_args()
    if args.in_python:
        outcomes_module.joins_in_database = lambda engine: False
    with fresh_pg_database() as url:  # a new database of its own, dropped at the end
        name = url.rsplit("/", 1)[1]
        engine = get_engine(url)  # migrated
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO modelyard_predictions (request_id, route, ts, model, version, inputs, outputs, n_rows) "
                "SELECT 'r' || g, 'primary', now() - interval '1 hour', %s, 1, "
                "json_build_array(json_build_object('id', g, 'area_sqm', 50 + g %% 200)), "
                "json_build_array(100000.0 + g %% 5000), 1 FROM generate_series(1, %s) AS g",
                (MODEL, args.rows))
            conn.execute("ANALYZE modelyard_predictions")
        print(f"logged {args.rows:,} predictions in {time.perf_counter() - started:.1f}s (setup, not measured)")
        now = datetime.now(UTC)
        if args.by_key:
            outcomes = [Outcome(100000.0 + (i * 7) % 5000, key={"id": i}, at=now) for i in range(1, args.rows + 1)]
        else:
            outcomes = [Outcome(100000.0 + (i * 7) % 5000, f"r{i}") for i in range(1, args.rows + 1)]
        for label in ("join", "again (duplicates)"):
            matched = duplicate = 0
            cpu, server = time.process_time(), _server_cpu(name)
            started = time.perf_counter()
            chunks = ((outcomes[i:i + args.chunk], i) for i in range(0, len(outcomes), args.chunk))
            for got, _ in join_chunks(engine, chunks, in_flight=args.in_flight, model=MODEL, source="sql",
                                      task_of=_task_of, now=now, window=7200.0):
                matched += got.matched
                duplicate += got.duplicate
            seconds = time.perf_counter() - started
            cpu, server_after = time.process_time() - cpu, _server_cpu(name)
            spent = f"{server_after - server:.1f}s" if server is not None and server_after is not None else "n/a"
            print(f"{label}: {args.rows:,} outcomes in {seconds:.2f}s = {args.rows / seconds:,.0f} rows/s "
                  f"(matched {matched:,}, duplicate {duplicate:,}; chunks of {args.chunk:,}, "
                  f"{args.in_flight} at once); CPU: this process {cpu:.1f}s, PostgreSQL {spent}")
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM modelyard_outcomes").scalar_one()
        print(f"outcome rows stored: {stored:,}")


if __name__ == "__main__":
    main()

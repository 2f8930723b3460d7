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
128 MB of shared buffers; load averages beside each; absolute figures move by a third from run to run):

- ``--rows 1000000``: join 23,722 rows/s (42.2 s), duplicates 46,526 rows/s (load 4.5-5.6); an earlier run
  27,648 / 40,069 rows/s (load 3.4-5.4). Before (join in Python): 757 rows/s. The goal is not met here: the
  insert into ``modelyard_outcomes`` (three indexes) is about half of the time, the index lookups in the log
  and in the outcomes most of the rest.
- ``--rows 100000``, one after the other: in the database 27,909 / 41,608 rows/s, ``--in-python`` 9,085 /
  19,220 rows/s (load 4.6-5.6).
- ``--rows 100000 --by-key``: in the database 10,667 / 15,238 rows/s, ``--in-python`` 4,469 / 4,307 rows/s
  (load 5.9-9.3). Every chunk reads the whole window of logged inputs: it grows with the window, not the chunk.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime

import psycopg

import modelyard.predlog.outcomes as outcomes_module
from modelyard.predlog.outcomes import Outcome, join_outcomes
from modelyard.registry.db import get_engine

ADMIN = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MODEL = "bench-houses"


def _task_of(model: str, version: int) -> tuple[str, list[object] | None]:
    return "regression", None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--by-key", action="store_true",
                        help="name each outcome by the entity key of its inputs ({'id': g}) within a 2 h window, "
                             "as `modelyard feedback --key id` does, instead of by request id")
    parser.add_argument("--in-python", action="store_true",
                        help="join in Python, record by record (the SQLite path), for comparison")
    args = parser.parse_args()
    if args.in_python:
        outcomes_module.joins_in_database = lambda engine: False
    name = f"modelyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
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
            started = time.perf_counter()
            for i in range(0, len(outcomes), args.chunk):
                got = join_outcomes(engine, outcomes[i:i + args.chunk], model=MODEL, source="sql",
                                    task_of=_task_of, now=now, window=7200.0)
                matched += got.matched
                duplicate += got.duplicate
            seconds = time.perf_counter() - started
            print(f"{label}: {args.rows:,} outcomes in {seconds:.2f}s = {args.rows / seconds:,.0f} rows/s "
                  f"(matched {matched:,}, duplicate {duplicate:,}; chunks of {args.chunk:,})")
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM modelyard_outcomes").scalar_one()
        print(f"outcome rows stored: {stored:,}")
    finally:
        get_engine(url).dispose()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

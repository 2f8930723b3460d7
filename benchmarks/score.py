"""``modelyard score`` PostgreSQL → PostgreSQL against in-process ``Model.predict``, in one run.

    python benchmarks/score.py [--rows 1000000] [--chunk-size 20000] [--max-iter 100] [--repeat 1]
                               [--baseline-src PATH] [--engine spark [--spark-chunk-size 100000] [--master local[2]]]

The example house-price model (HistGradientBoosting, ``--max-iter`` iterations, ONNX fast path) scores a
table of ``--rows`` rows with ``modelyard.batch.score`` (read with COPY, validate, predict, COPY out, the
run's bookkeeping, read ▶ score ▶ write overlapped); the baseline is ``Model.predict`` on the same rows
already in memory as one frame, with the same model object. Goal (issue 17): score ≥ 0.8x in-process.
``--baseline-src PATH`` (another checkout's ``src``, e.g. ``git archive main src | tar -x -C /tmp/base``) adds,
in the same rounds, the same run scored by that code in a child process (the model loaded before the clock
starts, as in this one's rounds after the first).

``--engine spark`` adds, in the same rounds, ``score --engine spark`` on PySpark (``--master``, default
``local[2]``): PostgreSQL → PostgreSQL (the driver reads and writes, Spark scores each chunk) and the same
rows as a Parquet file → Parquet (Spark reads, scores and writes). The session's start and its Python
workers' first imports are timed apart (warm-up runs of both shapes on a few rows), not in the rows/s.

Needs PostgreSQL (MODELYARD_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test); creates and drops
its own database.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import psycopg  # noqa: E402
from tests.batchstream_helpers import houses_input, train_houses, write_table  # noqa: E402
from tests.integration.serving import fresh_pg_database  # noqa: E402

from modelyard.batch import score  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.runtime import Model  # noqa: E402

print = functools.partial(print, flush=True)  # each line shows even when piped
ADMIN = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--max-iter", type=int, default=100, help="boosting iterations (the example's: 100)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds of both cases")
    parser.add_argument("--engine", choices=["local", "spark"], default="local",
                        help="spark: also score on PySpark in the same rounds")
    parser.add_argument("--spark-chunk-size", type=int, default=100_000, help="rows per Spark job (PG → PG)")
    parser.add_argument("--master", default="local[2]", help="the Spark master for --engine spark")
    parser.add_argument("--baseline-src", type=Path, help="also score with the modelyard package under PATH")
    args = parser.parse_args()
    with fresh_pg_database() as url, tempfile.TemporaryDirectory() as tmp:  # a database of its own, dropped
        folder = Path(tmp)
        bundle = train_houses(folder, 5000, args.max_iter)
        settings = Settings(home=folder / ".modelyard", database_url=url)
        Registry(settings).publish(bundle, alias="production")
        model = Model.load(bundle)
        frame = houses_input(args.rows, seed=99)
        write_table(url, "bench_houses", frame)
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            conn.execute("ALTER TABLE bench_houses ADD PRIMARY KEY (id)")
        features = frame.drop(columns=["id"])
        print(f"house-prices, HistGradientBoosting max_iter={args.max_iter}, fast path {model.fast_path}; "
              f"{args.rows:,} rows; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        in_process, scored, baseline = [], [], []
        score("house-prices", source="SELECT * FROM bench_houses LIMIT 1000", target="warm", settings=settings,
              key="id")  # loads the pinned model into this process, as the baseline's child does first
        spark_cases: dict[str, list[float]] = {"PG→PG": [], "Parquet→Parquet": []}
        if args.engine == "spark":
            parquet = folder / "bench_houses.parquet"
            frame.to_parquet(parquet, index=False, row_group_size=100_000)
            _warm_spark(args.master, settings, frame, folder)
        for i in range(args.repeat):
            t = time.perf_counter()
            model.predict(features)
            in_process.append(args.rows / (time.perf_counter() - t))
            t = time.perf_counter()
            result = score("house-prices", source="SELECT * FROM bench_houses", target="bench_scores",
                           settings=settings, key="id", chunk_size=args.chunk_size, run_id=f"bench-{i}")
            scored.append(args.rows / (time.perf_counter() - t))
            assert result.rows_scored == args.rows, result
            print(f"  round {i + 1}: in-process Model.predict {in_process[-1]:,.0f} rows/s; "
                  f"modelyard score PG→PG {scored[-1]:,.0f} rows/s; ratio {scored[-1] / in_process[-1]:.2f}; "
                  f"load {os.getloadavg()[0]:.1f}")
            if args.baseline_src:
                baseline.append(_baseline(args.baseline_src, settings, args.chunk_size, f"bench-base-{i}", args.rows))
                print(f"           baseline {args.baseline_src}: score PG→PG {baseline[-1]:,.0f} rows/s; ratio "
                      f"{baseline[-1] / in_process[-1]:.2f}; this code {scored[-1] / baseline[-1]:.2f}x the baseline")
            if args.engine == "spark":
                t = time.perf_counter()
                result = score("house-prices", source="SELECT * FROM bench_houses", target="bench_spark",
                               settings=settings, key="id", chunk_size=args.spark_chunk_size,
                               run_id=f"bench-spark-{i}", engine="spark", cluster=args.master)
                spark_cases["PG→PG"].append(args.rows / (time.perf_counter() - t))
                assert result.rows_scored == args.rows, result
                t = time.perf_counter()
                result = score("house-prices", source=str(parquet), key="id", settings=settings,
                               target=str(folder / f"bench_out_{i}.parquet"), run_id=f"bench-pq-{i}",
                               engine="spark", cluster=args.master)
                spark_cases["Parquet→Parquet"].append(args.rows / (time.perf_counter() - t))
                assert result.rows_scored == args.rows, result
                print("           " + "; ".join(
                    f"score --engine spark {case} {rates[-1]:,.0f} rows/s ({rates[-1] / in_process[-1]:.2f}x "
                    f"in-process, {rates[-1] / scored[-1]:.2f}x local engine)"
                    for case, rates in spark_cases.items()))
        best_in, best_scored = max(in_process), max(scored)
        ratio = best_scored / best_in
        print(f"best: score {best_scored:,.0f} rows/s vs in-process {best_in:,.0f} rows/s: {ratio:.2f}x "
              f"(goal ≥ 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
        if baseline:
            print(f"best: baseline score {max(baseline):,.0f} rows/s: {max(baseline) / best_in:.2f}x in-process; "
                  f"this code {best_scored / max(baseline):.2f}x the baseline")
        for case, rates in spark_cases.items():
            if rates:
                print(f"best: score --engine spark {case} {max(rates):,.0f} rows/s "
                      f"({max(rates) / best_in:.2f}x in-process, {max(rates) / best_scored:.2f}x local engine)")
        print(f"load average now {os.getloadavg()[0]:.1f} (a shared machine: figures move between runs)")


_BASELINE_CHILD = """
import sys, time
from modelyard.batch import score
from modelyard.batch.chunk import load_pinned
from modelyard.config import Settings
from modelyard.registry import Registry
home, url, chunk_size, run_id, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
settings = Settings(home=home, database_url=url)
load_pinned(settings, "house-prices", Registry(settings).resolve("house-prices@production").version)
t = time.perf_counter()
result = score("house-prices", source="SELECT * FROM bench_houses", target="bench_base_scores",
               settings=settings, key="id", chunk_size=chunk_size, run_id=run_id)
assert result.rows_scored == rows, result
print(rows / (time.perf_counter() - t))
"""


def _baseline(src: Path, settings: Settings, chunk_size: int, run_id: str, rows: int) -> float:
    """Rows/s of the same run scored by the modelyard package under ``src``, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    out = subprocess.run([sys.executable, "-c", _BASELINE_CHILD, str(settings.home), settings.resolved_database_url,
                          str(chunk_size), run_id, str(rows)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _warm_spark(master: str, settings: Settings, frame: Any, folder: Path) -> None:
    """Start the session and its Python workers (imports, model load) before anything is timed."""
    t = time.perf_counter()
    from modelyard.batch.spark import session

    session(master)
    started = time.perf_counter() - t
    small = folder / "warm.parquet"
    frame.head(1000).to_parquet(small, index=False)
    score("house-prices", source=str(small), target=str(folder / "warm_out.parquet"), settings=settings,
          key="id", engine="spark", cluster=master)
    score("house-prices", source="SELECT * FROM bench_houses ORDER BY id LIMIT 20000", target="warm_spark",
          settings=settings, key="id", chunk_size=5000, engine="spark", cluster=master)  # the other path's JIT
    print(f"spark {master}: session {started:.1f} s, first run (workers import and load) "
          f"{time.perf_counter() - t - started:.1f} s; not in the rows/s")


if __name__ == "__main__":
    main()

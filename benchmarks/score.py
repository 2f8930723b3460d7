"""``modelyard score`` PostgreSQL → PostgreSQL against in-process ``Model.predict``, in one run.

    python benchmarks/score.py [--rows 1000000] [--chunk-size 20000] [--max-iter 100] [--repeat 1]

The example house-price model (HistGradientBoosting, ``--max-iter`` iterations, ONNX fast path) scores a
table of ``--rows`` rows with ``modelyard.batch.score`` (read with COPY, validate, predict, COPY out, the
run's bookkeeping, read ▶ score ▶ write overlapped); the baseline is ``Model.predict`` on the same rows
already in memory as one frame, with the same model object. Goal (issue 17): score ≥ 0.8x in-process.

Needs PostgreSQL (MODELYARD_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test); creates and drops
its own database.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import psycopg  # noqa: E402
from tests.batchstream_helpers import _train, houses_input, write_table  # noqa: E402
from tests.conftest import EXAMPLES, generate_houses  # noqa: E402

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
    args = parser.parse_args()
    db = f"modelyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = ADMIN.rsplit("/", 1)[0] + f"/{db}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            generate_houses(5000, seed=11).to_csv(folder / "houses.csv", index=False)
            spec = (EXAMPLES / "house_prices" / "spec.toml").read_text()
            bundle = _train(folder, spec.replace("max_iter = 100", f"max_iter = {args.max_iter}"))
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
            in_process, scored = [], []
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
                      f"modelyard score PG→PG {scored[-1]:,.0f} rows/s; ratio {scored[-1] / in_process[-1]:.2f}")
            best_in, best_scored = max(in_process), max(scored)
            ratio = best_scored / best_in
            print(f"best: score {best_scored:,.0f} rows/s vs in-process {best_in:,.0f} rows/s: {ratio:.2f}x "
                  f"(goal ≥ 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    finally:
        from modelyard.registry.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()

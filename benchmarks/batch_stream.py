"""Batch and stream throughput, each as a ratio to a baseline measured in the same run.

    python benchmarks/batch_stream.py [--rows 100000] [--messages 5000] [--max-iter 20]

Batch: rows/s of ``modelyard score`` PostgreSQL → PostgreSQL (read through a server-side cursor, validate,
predict, COPY out, bookkeeping) against raw in-process ``pipeline.predict`` on the same rows already in
memory (goal: ≥ 0.7). Stream: messages/s through NATS JetStream with one ``modelyard stream`` process
(prediction log on), against in-process predictions in batches of the same size; then p50/p99 end-to-end
latency (publish → answer received) at half the measured throughput.

Needs PostgreSQL (MODELYARD_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test) and NATS on
127.0.0.1:4222. Creates and drops its own database and streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import psycopg  # noqa: E402
from tests.batchstream_helpers import houses_input, train_houses, write_table  # noqa: E402
from tests.conftest import cli_env  # noqa: E402
from tests.integration.serving import fresh_pg_database  # noqa: E402
from tests.stream_kits import NatsKit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from modelyard.batch import score  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.runtime import Model  # noqa: E402

ADMIN = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def best_of(n: int, fn):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def bench_batch(settings: Settings, model: Model, rows: int, repeat: int, chunk_size: int) -> None:
    url = settings.resolved_database_url
    frame = houses_input(rows, seed=99)
    write_table(url, "bench_houses", frame)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute("ALTER TABLE bench_houses ADD PRIMARY KEY (id)")  # --key is usually the primary key
    features = frame.drop(columns=["id"])
    raw_best, raw_med = best_of(repeat, lambda: model.pipeline_.predict(features))
    print(f"raw pipeline.predict, {rows:,} rows in memory: best {rows / raw_best:,.0f} rows/s "
          f"(median {rows / raw_med:,.0f})")
    runs = iter(range(10_000))
    for threads, label in ((1, "--threads 1 (default)"), (None, "--threads 0 (OpenMP default)")):

        def one(threads: int | None = threads) -> None:
            score("house-prices", source="SELECT * FROM bench_houses", target="bench_scores",
                  settings=settings, key="id", chunk_size=chunk_size, run_id=f"bench-{next(runs)}",
                  threads=threads)

        best, med = best_of(repeat, one)
        print(f"modelyard score PG→PG {label}: best {rows / best:,.0f} rows/s (median {rows / med:,.0f}); "
              f"ratio to raw predict: best {raw_best / best:.2f}, median {raw_med / med:.2f}")


async def _stream(settings: Settings, model: Model, n: int, batch: int) -> None:
    rows = json.loads(houses_input(n, seed=5).drop(columns=["id"]).to_json(orient="records"))
    with threadpool_limits(1, user_api="openmp"):  # as the consumer predicts
        t = time.perf_counter()
        for i in range(0, n, batch):
            model.predict(rows[i:i + batch])
        raw = n / (time.perf_counter() - t)
    kit = NatsKit()
    await kit.setup()
    received: dict[str, float] = {}
    sent: dict[str, float] = {}

    async def on_answer(msg) -> None:  # type: ignore[no-untyped-def]
        received.setdefault(json.loads(msg.data)["id"], time.perf_counter())

    await kit.nc.subscribe(kit.out, cb=on_answer)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "stream", "house-prices", "--broker", kit.url,
         "--in", kit.in_subject, "--out", kit.out, "--batch-size", str(batch)],
        env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await kit.send([("warm", json.dumps(rows[0]).encode())])
        while "warm" not in received:
            await asyncio.sleep(0.05)
        # throughput: a backlog of n messages
        await kit.send([(f"t{i}", json.dumps(r).encode()) for i, r in enumerate(rows)])
        start = time.perf_counter()
        while sum(1 for k in received if k.startswith("t")) < n:
            await asyncio.sleep(0.01)
        rate = n / (time.perf_counter() - start)
        print(f"stream, backlog of {n:,} messages, batch {batch}, 1 process: {rate:,.0f} msgs/s; "
              f"in-process predict in batches of {batch}: {raw:,.0f} rows/s; ratio {rate / raw:.2f}")
        # latency: a steady flow at half that rate
        interval, count = 2.0 / rate, min(n, int(rate * 10))
        for i in range(count):
            sent[f"l{i}"] = time.perf_counter()
            await kit.js.publish_async(kit.in_subject, json.dumps(rows[i]).encode(),
                                       headers={"Nats-Msg-Id": f"l{i}"})
            await asyncio.sleep(interval)
        deadline = time.perf_counter() + 60
        while sum(1 for k in received if k.startswith("l")) < count and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        lat = sorted((received[k] - sent[k]) * 1000 for k in sent if k in received)
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"stream latency at {rate / 2:,.0f} msgs/s ({len(lat):,} messages): p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        await kit.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--max-iter", type=int, default=20, help="boosting iterations of the model")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    args = parser.parse_args()
    with fresh_pg_database() as url, tempfile.TemporaryDirectory() as tmp:  # a database of its own, dropped
        folder = Path(tmp)
        bundle = train_houses(folder, 5000, args.max_iter)
        settings = Settings(home=folder / ".modelyard", database_url=url)
        registry = Registry(settings)
        registry.publish(bundle, alias="production")
        model = Model(registry.load("house-prices"))
        print(f"house-prices, HistGradientBoosting max_iter={args.max_iter}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        bench_batch(settings, model, args.rows, args.repeat, args.chunk_size)
        asyncio.run(_stream(settings, model, args.messages, args.batch_size))


if __name__ == "__main__":
    main()

"""Soak: a 2-worker ``modelyard serve`` driven for a fixed number of requests; does memory or the log's backlog grow?

    python benchmarks/soak.py [--requests 200000] [--concurrency 16] [--every 10000] [--workers 2]
                              [--database-url postgresql://...] [--log-target sql|parquet]

The example house-price model is trained and published, served with ``--workers`` worker processes and the
prediction log on (durability ``process``), and sent ``--requests`` one-row requests by an async httpx
client in its own process, ``--concurrency`` at a time. Every ``--every`` requests it prints the time,
the request rate, each worker's resident memory (RSS) and the log's backlog: segments and records waiting
and the oldest record's age, as ``modelyard log status`` reads them from the segment folder.

At the end, for each worker: RSS after warm-up (the first sample), at the end, and the growth per 100k
requests to the server, as the slope of a least-squares line through the samples after warm-up (less
noisy than end minus start). A leak shows as a slope that stays positive however long the run; the
backlog should stay flat (it is the shipper keeping up), and end at zero once the server stops.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _competitors import modelyard_server  # noqa: E402
from _loadgen import free_port, write_body  # noqa: E402
from serve import ROW, prepare  # noqa: E402

from modelyard.predlog import segments  # noqa: E402

CLIENT = r"""
import asyncio, sys, time
import httpx
url, path, concurrency, total, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
body = open(path, "rb").read()
issued = done = errors = 0
async def worker(client):
    global issued, done, errors
    while issued < total:
        issued += 1
        try:
            r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
            errors += r.status_code >= 300
        except httpx.HTTPError:
            errors += 1
        done += 1
        if done % every == 0 or done == total:
            print(done, errors, flush=True)
async def main():
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
asyncio.run(main())
"""


def workers_of(pid: int) -> list[psutil.Process]:
    """The server's worker processes (uvicorn spawns them; the resource tracker is not one)."""
    children = psutil.Process(pid).children(recursive=True)
    return sorted((p for p in children if "resource_tracker" not in " ".join(p.cmdline())), key=lambda p: p.pid)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--every", type=int, default=10_000, help="Requests between samples.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=3000, help="Training rows.")
    parser.add_argument("--database-url", help="Registry and log database (default: SQLite, temporary).")
    parser.add_argument("--log-target", choices=["sql", "parquet"], default="sql")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server below is stopped, not orphaned
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    home = tmp / ".modelyard"
    spill = home.resolve() / "spill"
    body = write_body(tmp, "one-row", {"instances": [ROW]})
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        server = modelyard_server(home, free_port(), args.workers, tmp, database_url=args.database_url,
                                  settings={"MODELYARD_LOG_TARGET": args.log_target})
        try:
            server.wait_ready()
            procs = workers_of(server.proc.pid)
            print(f"{len(procs)} workers {[p.pid for p in procs]}, log target {args.log_target}, "
                  f"{args.requests} requests at c={args.concurrency}", flush=True)
            print(f"{'requests':>9} {'s':>6} {'req/s':>7} | " + " ".join(f"{'RSS w' + str(i) + ' MB':>10}"
                  for i in range(len(procs))) + f" | {'segments':>8} {'records':>8} {'oldest s':>8} errors",
                  flush=True)
            samples: list[tuple[int, list[float]]] = []
            start = last_t = time.monotonic()
            last_n = 0
            client = subprocess.Popen([sys.executable, "-c", CLIENT, server.url, str(body), str(args.concurrency),
                                       str(args.requests), str(args.every)], stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None
            for line in client.stdout:
                done, errors = (int(v) for v in line.split())
                now = time.monotonic()
                rss = [p.memory_info().rss / 2**20 for p in procs]
                backlog = segments.backlog(spill)
                samples.append((done, rss))
                age = backlog.oldest_age_seconds
                print(f"{done:>9} {now - start:6.0f} {(done - last_n) / max(now - last_t, 1e-9):7.0f} | "
                      + " ".join(f"{r:10.1f}" for r in rss)
                      + f" | {backlog.segments:>8} {backlog.records:>8} {'-' if age is None else f'{age:.1f}':>8}"
                      f" {errors}", flush=True)
                last_n, last_t = done, now
            client.wait()
        finally:
            if "client" in locals() and client.poll() is None:
                client.kill()
            server.stop()
        left = segments.backlog(spill)
        print(f"after the server stopped: {left.segments} segments, {left.records} records left in {spill}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if len(samples) < 2:
        print("too few samples: raise --requests or lower --every")
        return
    print(f"\nRSS per worker (the first sample, at {samples[0][0]} requests, is the warm-up baseline)")
    summary = []
    for i in range(len(samples[0][1])):
        xs = [n for n, _ in samples]
        ys = [r[i] for _, r in samples]
        per_100k = slope(xs, ys) * 100_000
        summary.append({"worker": i, "rss_start_mb": ys[0], "rss_end_mb": ys[-1], "growth_mb_per_100k": per_100k})
        print(f"  worker {i}: {ys[0]:.1f} MB -> {ys[-1]:.1f} MB, growth {per_100k:+.2f} MB per 100k requests "
              "(least-squares slope)")
    print(json.dumps({"requests": samples[-1][0], "workers": summary}))


if __name__ == "__main__":
    main()

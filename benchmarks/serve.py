"""Benchmark the REST server: requests/s and p50/p99 latency at concurrency 1, 8 and 32, with the prediction
log on and off, and the log's cost as a ratio measured in the same run.

    python benchmarks/serve.py                       # SQLite log (the embedded default)
    python benchmarks/serve.py --database-url postgresql://postgres@127.0.0.1:5432/bench   # PostgreSQL log

The server (``modelyard serve``, one worker unless ``--workers``) and the load generator run as separate
processes. The load generator is ``wrk`` with a Lua body script when it is installed, otherwise an async
httpx client in a subprocess. Each request carries one house (the house-price example model, trained here
on generated data). Log-on and log-off servers alternate for ``--rounds`` rounds; figures are averages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))

ROW = {"area_sqm": 120.0, "bedrooms": 3, "bathrooms": 2, "year_built": 1990, "year_renovated": None,
       "lot_sqm": 300.0, "garage_spaces": 1, "floors": 2, "distance_center_km": 5.5, "school_rating": 7.5,
       "crime_index": 2.1, "neighborhood": "Harbor", "house_type": "detached", "condition": "good",
       "heating": "gas", "has_pool": "no"}
BODY = json.dumps({"instances": [ROW]})

ASYNC_CLIENT = r"""
import asyncio, json, sys, time
import httpx
url, body, concurrency, duration = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
latencies, errors = [], 0
async def worker(client, stop_at):
    global errors
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors += 1
async def main():
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, start + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / elapsed, "p50": q(0.5),
                      "p99": q(0.99), "errors": errors}))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path, database_url: str | None, log: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["MODELYARD_HOME"] = str(home)
    env["MODELYARD_PREDICTION_LOG"] = "true" if log else "false"
    if database_url:
        env["MODELYARD_DATABASE_URL"] = database_url
    return env


def prepare(home: Path, database_url: str | None, rows: int) -> None:
    from generate import generate

    from modelyard.config import Settings
    from modelyard.pipeline import load_spec, train
    from modelyard.registry import Registry

    folder = home.parent / "house"
    folder.mkdir(parents=True)
    generate(rows, seed=3).to_csv(folder / "houses.csv", index=False)
    (folder / "spec.toml").write_text((ROOT / "examples" / "house_prices" / "spec.toml").read_text())
    result = train(load_spec(folder / "spec.toml"))
    result.write_bundle(folder / "bundle")
    Registry(Settings(home=home, database_url=database_url)).publish(folder / "bundle", alias="production")


class Server:
    def __init__(self, home: Path, database_url: str | None, log: bool, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/models/house-prices/predict"
        self.logfile = open(home.parent / f"server-{'on' if log else 'off'}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env_for(home, database_url, log), stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {self.logfile.name}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.logfile.close()


def run_wrk(url: str, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    script = workdir / "body.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [[{BODY}]]\n")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": ms("50%"), "p99": ms("99%"), "errors": int(errors.group(1)) if errors else 0}


def run_async(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", ASYNC_CLIENT, url, BODY, str(concurrency), str(duration)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def measure(client: str, url: str, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    if client == "wrk":
        return run_wrk(url, concurrency, duration, workdir)
    return run_async(url, concurrency, duration)


def logged_count(home: Path, database_url: str | None) -> int:
    from sqlalchemy import func, select

    from modelyard.config import Settings
    from modelyard.registry import Registry
    from modelyard.registry.tables import predictions

    with Registry(Settings(home=home, database_url=database_url)).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar() or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="Registry and log database (default: SQLite, temporary).")
    parser.add_argument("--duration", type=float, default=8.0, help="Seconds per measurement.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", type=int, default=3000, help="Training rows for the model.")
    parser.add_argument("--client", choices=["auto", "wrk", "async"], default="auto")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "async")

    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    home = tmp / ".modelyard"
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        results: dict[tuple[bool, int], list[dict[str, Any]]] = {}
        answered_with_log = 0
        for round_ in range(args.rounds):
            # Both servers run side by side; each cell measures one, then the other (order alternating by
            # round), so that a busy moment on the machine hits both sides of a ratio alike.
            servers = {log: Server(home, args.database_url, log, args.workers) for log in (True, False)}
            try:
                for server in servers.values():
                    measure(client, server.url, 8, 2, tmp)  # warm-up
                for c in levels:
                    for log in (True, False) if round_ % 2 == 0 else (False, True):
                        r = measure(client, servers[log].url, c, args.duration, tmp)
                        results.setdefault((log, c), []).append(r)
                        if log:
                            answered_with_log += r["requests"]
                        print(f"  round {round_ + 1} log {'on ' if log else 'off'} c={c:<3} "
                              f"{r['rps']:8.1f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:7.2f} ms  "
                              f"errors {r['errors']}", flush=True)
            finally:
                for server in servers.values():
                    server.stop()
        logged = logged_count(home, args.database_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def avg(log: bool, c: int, key: str) -> float:
        return statistics.fmean(r[key] for r in results[(log, c)])

    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nmodelyard serve, {args.workers} worker(s), 1-row requests, load by {client}, log in {db}, "
          f"{args.rounds} rounds x {args.duration:.0f}s per cell (averages)")
    print(f"{'conc':>4} | {'log on req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'log off req/s':>13} "
          f"{'p50 ms':>7} {'p99 ms':>7} | {'on/off req/s':>12} {'p50 on/off':>10}")
    for c in levels:
        on, off = avg(True, c, "rps"), avg(False, c, "rps")
        print(f"{c:>4} | {on:12.1f} {avg(True, c, 'p50'):7.2f} {avg(True, c, 'p99'):7.2f} | {off:13.1f} "
              f"{avg(False, c, 'p50'):7.2f} {avg(False, c, 'p99'):7.2f} | {on / off:12.3f} "
              f"{avg(True, c, 'p50') / avg(False, c, 'p50'):10.3f}")
    overall = statistics.fmean(avg(True, c, "rps") / avg(False, c, "rps") for c in levels)
    print(f"log overhead: throughput with the log is {overall:.3f} x without it "
          f"(goal >= 0.90, i.e. the log costs at most 10%)")
    print(f"prediction log: {logged} records in the database for {answered_with_log} requests answered "
          f"by the log-on servers (+ warm-up requests)")


if __name__ == "__main__":
    main()

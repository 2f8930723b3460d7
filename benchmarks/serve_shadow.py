"""Benchmark the REST server: requests/s and p50/p99 latency at concurrency 1, 8 and 32, with the prediction
log on and off, and with a shadow attached or not; each cost as a ratio measured in the same run.

    python benchmarks/serve_shadow.py                # SQLite log (the embedded default)
    python benchmarks/serve_shadow.py --database-url postgresql://postgres@127.0.0.1:5432/bench   # PostgreSQL log
    python benchmarks/serve_shadow.py --compare shadow   # only the shadow's cost

The server (``modelyard serve``, one worker unless ``--workers``) and the load generator run as separate
processes. The load generator is ``wrk`` with a Lua body script when it is installed, otherwise an async
httpx client in a subprocess. Each request carries one house (the house-price example model, trained here
on generated data). The registry holds the model twice: ``house-prices`` (production only) and
``house-prices-shadowed`` (production plus a shadow: the same bundle published again). The log-on server
answers both, so "shadow" against "no shadow" is the same process, the same model and the same log; the
log-off server answers ``house-prices``. Cells alternate for ``--rounds`` rounds; figures are averages.
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
MODEL, SHADOWED = "house-prices", "house-prices-shadowed"

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
    registry = Registry(Settings(home=home, database_url=database_url))
    registry.publish(folder / "bundle", alias="production")
    registry.publish(folder / "bundle", name=SHADOWED, alias="production")
    registry.publish(folder / "bundle", name=SHADOWED, alias="shadow")


class Server:
    def __init__(self, home: Path, database_url: str | None, log: bool, workers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
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

    def url(self, model: str) -> str:
        return f"{self.base}/v1/models/{model}/predict"

    def metric(self, name: str) -> float:
        text = httpx.get(self.base + "/metrics", timeout=10).text
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

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


def logged_count(home: Path, database_url: str | None) -> dict[str, int]:
    from sqlalchemy import func, select

    from modelyard.config import Settings
    from modelyard.registry import Registry
    from modelyard.registry.tables import predictions as p

    with Registry(Settings(home=home, database_url=database_url)).engine.connect() as conn:
        rows = conn.execute(select(p.c.route, func.count()).group_by(p.c.route)).all()
    return {str(route): int(n) for route, n in rows}


# A cell: (server, model). The ratio pairs: (name, numerator cell, denominator cell, goal text).
CELLS = {"log on": ("on", MODEL), "log off": ("off", MODEL), "shadow": ("on", SHADOWED)}
PAIRS = {"log": ("log on", "log off"), "shadow": ("shadow", "log on")}


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
    parser.add_argument("--compare", default="log,shadow", help="Which costs: log, shadow or both.")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "async")
    pairs = [c.strip() for c in args.compare.split(",") if c.strip()]
    if not pairs or any(c not in PAIRS for c in pairs):
        parser.error(f"--compare takes {', '.join(PAIRS)}")
    cells = sorted({cell for c in pairs for cell in PAIRS[c]}, key=list(CELLS).index)

    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    home = tmp / ".modelyard"
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        answered = {cell: 0 for cell in cells}
        dropped = 0.0
        for round_ in range(args.rounds):
            # The servers run side by side; each measurement runs alone, the order alternating by round, so
            # that a busy moment on the machine hits both sides of a ratio alike.
            servers = {key: Server(home, args.database_url, key == "on", args.workers)
                       for key in sorted({CELLS[c][0] for c in cells})}
            try:
                for cell in cells:
                    key, model = CELLS[cell]
                    measure(client, servers[key].url(model), 8, 2, tmp)  # warm-up
                for c in levels:
                    for cell in cells if round_ % 2 == 0 else reversed(cells):
                        key, model = CELLS[cell]
                        r = measure(client, servers[key].url(model), c, args.duration, tmp)
                        results.setdefault((cell, c), []).append(r)
                        answered[cell] += r["requests"]
                        print(f"  round {round_ + 1} {cell:<8} c={c:<3} {r['rps']:8.1f} req/s  "
                              f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:7.2f} ms  errors {r['errors']}", flush=True)
                if "on" in servers:
                    dropped += servers["on"].metric("modelyard_shadow_dropped_total")
            finally:
                for server in servers.values():
                    server.stop()
        logged = logged_count(home, args.database_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def avg(cell: str, c: int, key: str) -> float:
        return statistics.fmean(r[key] for r in results[(cell, c)])

    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nmodelyard serve, {args.workers} worker(s), 1-row requests, load by {client}, log in {db}, "
          f"{args.rounds} rounds x {args.duration:.0f}s per cell (averages)")
    for pair in pairs:
        a, b = PAIRS[pair]
        print(f"\n{'conc':>4} | {a + ' req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | {b + ' req/s':>14} {'p50 ms':>7} "
              f"{'p99 ms':>7} | {'req/s ratio':>11} {'p50 ratio':>9} {'p99 ratio':>9}")
        for c in levels:
            print(f"{c:>4} | {avg(a, c, 'rps'):14.1f} {avg(a, c, 'p50'):7.2f} {avg(a, c, 'p99'):7.2f} | "
                  f"{avg(b, c, 'rps'):14.1f} {avg(b, c, 'p50'):7.2f} {avg(b, c, 'p99'):7.2f} | "
                  f"{avg(a, c, 'rps') / avg(b, c, 'rps'):11.3f} {avg(a, c, 'p50') / avg(b, c, 'p50'):9.3f} "
                  f"{avg(a, c, 'p99') / avg(b, c, 'p99'):9.3f}")
        rps = statistics.fmean(avg(a, c, "rps") / avg(b, c, "rps") for c in levels)
        p50 = statistics.fmean(avg(a, c, "p50") / avg(b, c, "p50") for c in levels)
        if pair == "log":
            print(f"log overhead: throughput with the log is {rps:.3f} x without it "
                  f"(goal >= 0.90, i.e. the log costs at most 10%)")
        else:
            print(f"shadow overhead: with a shadow attached, throughput is {rps:.3f} x and p50 {p50:.3f} x "
                  f"without one (goal: p50 at most 1.10 x)")
    on = sum(answered[c] for c in cells if CELLS[c][0] == "on")
    print(f"\nprediction log: {sum(logged.values())} records in the database ({logged}) for {on} requests "
          "answered by the log-on server (+ warm-up requests)")
    if "shadow" in cells:
        print(f"shadow: {logged.get('shadow', 0)} shadow records for {answered['shadow']} shadowed requests "
              f"(+ warm-up); {dropped:.0f} shadow jobs dropped because the queue was full")


if __name__ == "__main__":
    main()

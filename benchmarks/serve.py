"""Benchmark the REST server, two ways; every figure is a ratio measured in the same run.

    python benchmarks/serve.py --compare mlflow,bentoml   # modelyard vs mlflow models serve vs BentoML
    python benchmarks/serve.py --compare mlserver         # V2 REST JSON, REST binary, gRPC vs MLServer
    python benchmarks/serve.py                            # modelyard with the prediction log on vs off
    python benchmarks/serve.py --database-url postgresql://postgres@127.0.0.1:5432/bench   # log in PostgreSQL
    python benchmarks/serve.py --durability async,process,machine   # the log's durability levels compared
    python benchmarks/serve.py --floor                    # modelyard against a bare Starlette endpoint

``--compare``: the example house-price pipeline (100 trees) behind each server with 2 workers, 1-row
requests at concurrency 1, 8, 32 and 1000-row requests at concurrency 1 and 4, beside raw in-process
scikit-learn and ONNX figures (see ``_compare.py``). MLflow and BentoML are installed only in the
benchmark's own virtualenv ``.bench-venv/`` (see ``_competitors.py``), never into modelyard's.
``--compare mlserver``: the Open Inference Protocol against MLServer + mlserver-sklearn (``_oip.py``).

Without ``--compare``: log-on and log-off modelyard servers alternate for ``--rounds`` rounds of 1-row
requests at each ``--concurrency``; figures are averages.

``--durability``: one server per ``MODELYARD_LOG_DURABILITY`` level side by side, alternating per round:
throughput at c=32 and p50 at c=1 with 1-row requests, as ratios to ``async`` (goals: process >= 0.95x,
machine >= 0.85x, p50 of process at most +0.1 ms).

``--floor``: modelyard (prediction log on, durability ``process``) beside the machine's HTTP floor, a bare
Starlette endpoint under the same uvicorn that parses the JSON body and returns a constant, 2 workers each,
1-row requests of the example model (20,000 training rows), alternating per round; beside them the model's
in-process 1-row ``Model.predict`` (one thread). Goals (issue 17): c=32 throughput >= 0.4x the floor's, and
c=1 p50 <= the floor's p50 + the in-process predict + 0.1 ms. Beside the floor, ``floor-1w``: the same
endpoint under modelyard's HTTP protocol (``serve/wire.py``, one socket write a response), to show what that
protocol is worth on its own, and ``floor-rp``: the same endpoint with a socket per worker (``SO_REUSEPORT``,
``serve/workers.py``, as ``modelyard serve`` runs its workers); the goals are taken against the plain floor.

Servers and the load generator run as separate processes: ``wrk`` when installed, otherwise an async httpx
client in a subprocess.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _competitors import floor_server, modelyard_server  # noqa: E402
from _loadgen import free_port, measure, pick_client, write_body  # noqa: E402

ROW = {"area_sqm": 120.0, "bedrooms": 3, "bathrooms": 2, "year_built": 1990, "year_renovated": None,
       "lot_sqm": 300.0, "garage_spaces": 1, "floors": 2, "distance_center_km": 5.5, "school_rating": 7.5,
       "crime_index": 2.1, "neighborhood": "Harbor", "house_type": "detached", "condition": "good",
       "heating": "gas", "has_pool": "no"}


def prepare(home: Path, database_url: str | None, rows: int) -> Path:
    """Train the example pipeline, publish it as ``production``; the pickled pipeline's path."""
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
    return folder / "bundle" / "model.joblib"


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
    parser.add_argument("--compare", metavar="mlflow,bentoml",
                        help="Compare with these servers (installed in .bench-venv/ on first use); 'mlserver' "
                             "compares the Open Inference Protocol (REST JSON, REST binary, gRPC) with MLServer.")
    parser.add_argument("--database-url", help="Registry and log database (default: SQLite, temporary).")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per measurement.")
    parser.add_argument("--rounds", type=int, default=2, help="Log on/off mode: rounds of measurements.")
    parser.add_argument("--concurrency", default="1,8,32", help="Log on/off mode: concurrency levels.")
    parser.add_argument("--workers", type=int, help="Worker processes per server (default 2 with --compare, "
                        "else 1).")
    parser.add_argument("--rows", type=int, help="Training rows (default 20000 with --compare, else 3000).")
    parser.add_argument("--single", type=int, default=400, help="--compare: in-process 1-row calls per case.")
    parser.add_argument("--max-batch", type=int, default=256,
                        help="--compare: BentoML's max_batch_size (modelyard's is MODELYARD_BATCH_MAX_ROWS).")
    parser.add_argument("--competitor-threads", default="1",
                        help="--compare: OMP/BLAS threads per MLflow or BentoML worker, as modelyard's (1), or "
                             "'default' to leave their native thread pools as they come.")
    parser.add_argument("--client", choices=["auto", "wrk", "async"], default="auto")
    parser.add_argument("--durability", metavar="async,process,machine",
                        help="Compare prediction-log durability levels instead of log on/off.")
    parser.add_argument("--floor", action="store_true",
                        help="Compare with a bare Starlette endpoint (parse the JSON body, return a constant).")
    parser.add_argument("--baseline-src", type=Path,
                        help="--floor: also serve the src/ folder of another checkout (before/after in one run).")
    args = parser.parse_args()
    if args.floor:
        args.workers = args.workers or 2
        args.rows = args.rows or 20_000
        against_floor(args)
    elif args.durability:
        args.workers = args.workers or 1
        args.rows = args.rows or 3000
        durability_levels(args)
    elif args.compare is not None and args.compare.strip().lower() == "mlserver":
        from _oip import compare_mlserver

        args.workers = args.workers or 2
        args.rows = args.rows or 20_000
        compare_mlserver(args, prepare)
    elif args.compare is not None:
        from _compare import compare

        args.workers = args.workers or 2
        args.rows = args.rows or 20_000
        compare(args, prepare)
    else:
        args.workers = args.workers or 1
        args.rows = args.rows or 3000
        log_on_off(args)


def log_on_off(args: argparse.Namespace) -> None:
    levels = [int(c) for c in args.concurrency.split(",")]
    client = pick_client(args.client)
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    home = tmp / ".modelyard"
    body = write_body(tmp, "one-row", {"instances": [ROW]})
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        results: dict[tuple[bool, int], list[dict[str, Any]]] = {}
        answered_with_log = 0
        for round_ in range(args.rounds):
            # Both servers run side by side; each cell measures one, then the other (order alternating by
            # round), so that a busy moment on the machine hits both sides of a ratio alike.
            servers = {log: modelyard_server(home, free_port(), args.workers, tmp, log=log,
                                             database_url=args.database_url) for log in (True, False)}
            try:
                for server in servers.values():
                    server.wait_ready()
                    measure(client, server.url, body, 8, 2)  # warm-up
                for c in levels:
                    for log in (True, False) if round_ % 2 == 0 else (False, True):
                        r = measure(client, servers[log].url, body, c, args.duration)
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


def durability_levels(args: argparse.Namespace) -> None:
    levels = [lv.strip() for lv in args.durability.split(",")]
    if "async" not in levels:
        levels.insert(0, "async")  # the baseline of every ratio
    client = pick_client(args.client)
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    home = tmp / ".modelyard"
    body = write_body(tmp, "one-row", {"instances": [ROW]})
    cells = [(32, "rps"), (1, "p50")]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        servers = {lv: modelyard_server(home, free_port(), args.workers, tmp, database_url=args.database_url,
                                        durability=lv) for lv in levels}
        try:
            for server in servers.values():
                server.wait_ready()
                measure(client, server.url, body, 8, 2)  # warm-up
            for round_ in range(args.rounds):
                order = levels if round_ % 2 == 0 else levels[::-1]
                for c, _ in cells:
                    for lv in order:
                        r = measure(client, servers[lv].url, body, c, args.duration)
                        results.setdefault((lv, c), []).append(r)
                        print(f"  round {round_ + 1} {lv:<8} c={c:<3} {r['rps']:8.1f} req/s  p50 {r['p50']:6.3f} ms"
                              f"  p99 {r['p99']:7.2f} ms  errors {r['errors']}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
        logged = logged_count(home, args.database_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def avg(lv: str, c: int, key: str) -> float:
        return statistics.fmean(r[key] for r in results[(lv, c)])

    print(f"\nmodelyard serve, {args.workers} worker(s), 1-row requests, load by {client}, "
          f"{args.rounds} rounds x {args.duration:.0f}s per cell (averages)")
    print(f"{'durability':<10} | {'c=32 req/s':>10} {'x async':>8} | {'c=1 p50 ms':>10} {'- async ms':>10}")
    goals = {"process": 0.95, "machine": 0.85}
    for lv in levels:
        rps, p50 = avg(lv, 32, "rps"), avg(lv, 1, "p50")
        goal = f"  (goal >= {goals[lv]:.2f}x)" if lv in goals else ""
        print(f"{lv:<10} | {rps:10.1f} {rps / avg('async', 32, 'rps'):8.3f} | {p50:10.3f} "
              f"{p50 - avg('async', 1, 'p50'):+10.3f}{goal}")
    print(f"prediction log: {logged} records in the database after the servers stopped")


def inprocess_single_ms(home: Path, database_url: str | None, calls: int) -> float:
    """The median of ``calls`` in-process 1-row ``Model.predict`` calls (one native thread), in ms."""
    import time

    from threadpoolctl import threadpool_limits

    from modelyard import load
    from modelyard.config import Settings

    model = load("house-prices@production", settings=Settings(home=home, database_url=database_url))
    times = []
    with threadpool_limits(limits=1):
        for _ in range(calls):
            t0 = time.perf_counter()
            model.predict([ROW])
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the process group ``pgid`` (Linux ``/proc``)."""
    import os

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def against_floor(args: argparse.Namespace) -> None:
    client = pick_client(args.client)
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    home = tmp / ".modelyard"
    body = write_body(tmp, "one-row", {"instances": [ROW]})
    cells = (32, 1)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        print(f"training the house-price model on {args.rows} rows ...", flush=True)
        prepare(home, args.database_url, args.rows)
        # the baseline gets its own copy of the registry, so its own SQLite log: sharing one, each server's
        # shipping waited for the other's and filled the other's index (copied before any server writes)
        baseline_home = tmp / "baseline" / ".modelyard"
        if args.baseline_src is not None:
            shutil.copytree(home, baseline_home)
        servers = {"modelyard": modelyard_server(home, free_port(), args.workers, tmp, log=True,
                                                 database_url=args.database_url, durability="process"),
                   "floor": floor_server(free_port(), args.workers, tmp),
                   "floor-1w": floor_server(free_port(), args.workers, tmp, one_write=True),
                   "floor-rp": floor_server(free_port(), args.workers, tmp, own_sockets=True)}
        if args.baseline_src is not None:
            servers["baseline"] = modelyard_server(baseline_home, free_port(), args.workers, tmp, log=True,
                                                   database_url=args.database_url, durability="process",
                                                   src=args.baseline_src.resolve())
        try:
            for server in servers.values():
                server.wait_ready()
                measure(client, server.url, body, 8, 2)  # warm-up
            for round_ in range(args.rounds):
                order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
                for c in cells:
                    for name in order:
                        cpu = group_cpu_seconds(servers[name].proc.pid)
                        r = measure(client, servers[name].url, body, c, args.duration)
                        r["cpu_ms"] = (group_cpu_seconds(servers[name].proc.pid) - cpu) * 1000 / max(1, r["requests"])
                        results.setdefault((name, c), []).append(r)
                        print(f"  round {round_ + 1} {name:<9} c={c:<3} {r['rps']:8.1f} req/s  p50 "
                              f"{r['p50']:6.3f} ms  p99 {r['p99']:7.2f} ms  CPU {r['cpu_ms']:.3f} ms/request  "
                              f"errors {r['errors']}  steal {100 * r['steal']:.0f}%", flush=True)
        finally:
            for server in servers.values():
                server.stop()
        single = inprocess_single_ms(home, args.database_url, args.single)
        logged = logged_count(home, args.database_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def avg(name: str, c: int, key: str) -> float:
        return statistics.fmean(r[key] for r in results[(name, c)])

    print(f"\n{args.workers} workers each, 1-row requests, load by {client}, {args.rounds} rounds x "
          f"{args.duration:.0f}s per cell (averages); modelyard with the prediction log on (process)")
    print(f"{'server':<10} | {'c=32 req/s':>10} {'x floor':>8} {'CPU ms/req':>10} {'floor/it':>8} | "
          f"{'c=1 p50 ms':>10} {'c=1 p99 ms':>10}")
    for name in servers:
        print(f"{name:<10} | {avg(name, 32, 'rps'):10.1f} {avg(name, 32, 'rps') / avg('floor', 32, 'rps'):8.3f} "
              f"{avg(name, 32, 'cpu_ms'):10.3f} {avg('floor', 32, 'cpu_ms') / avg(name, 32, 'cpu_ms'):8.3f} | "
              f"{avg(name, 1, 'p50'):10.3f} {avg(name, 1, 'p99'):10.3f}")
    print("(CPU ms/req: the server's process group's CPU time per answered request at c=32; floor/it, the "
          "floor's CPU per request over this server's, is the throughput ratio an idle machine would show; "
          "floor-1w: the same floor under modelyard's HTTP protocol, serve/wire.py, one write a response; "
          "floor-rp: the same floor with a socket per worker, as modelyard serve runs its workers, "
          "serve/workers.py: the goals are taken against the plain floor)")
    ratio = avg("modelyard", 32, "rps") / avg("floor", 32, "rps")
    budget = avg("floor", 1, "p50") + single + 0.1
    print(f"in-process 1-row Model.predict (one thread, median of {args.single}): {single:.3f} ms")
    print(f"goal c=32 throughput >= 0.40x the floor's: {ratio:.3f}x -> {'met' if ratio >= 0.4 else 'NOT met'}")
    print(f"goal c=1 p50 <= floor p50 + predict + 0.1 ms = {budget:.3f} ms: {avg('modelyard', 1, 'p50'):.3f} ms -> "
          f"{'met' if avg('modelyard', 1, 'p50') <= budget else 'NOT met'}")
    print(f"prediction log: {logged} records in the database after the servers stopped")
    steal = statistics.fmean(r["steal"] for cell in results.values() for r in cell)
    print(f"CPU steal while measuring (the hypervisor's share of this machine's CPU time): {100 * steal:.0f}%"
          f"{'; much steal: a noisy run, rerun on a quieter machine' if steal > 0.05 else ''}")


if __name__ == "__main__":
    main()

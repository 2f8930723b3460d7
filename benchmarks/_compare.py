"""``benchmarks/serve.py --compare mlflow,bentoml``: the same pipeline behind modelyard, MLflow and BentoML.

Two phases, 1-row requests (concurrency 1, 8, 32) then 1000-row requests (concurrency 1, 4), each with fresh
servers (so no adaptive batching state carries over from one request size to the other), warmed up by one
client. In a phase every server runs at once on 127.0.0.1 with the same number of workers, idle except while
it is measured; each cell measures every server in turn, in an order that rotates from cell to cell, so that
a busy moment on the shared machine hits every side of a ratio alike. In-process figures (raw scikit-learn,
ONNX Runtime) are measured in the same run, before the servers start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _competitors import Server, bench_python, bentoml_server, mlflow_server, modelyard_server
from _loadgen import free_port, measure, pick_client, write_body

PHASES = [(1, (1, 8, 32)), (1000, (1, 4))]  # rows per request, concurrency levels
CELLS = [(n, c) for n, levels in PHASES for c in levels]


def request_rows(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """JSON-ready house rows (missing numbers as null); no missing category, which the three servers would
    read differently (modelyard: missing; a DataFrame of records: the object ``None``)."""
    from generate import generate

    frame = generate(n * 2, seed=seed).drop(columns="price")
    frame = frame[frame["heating"].notna() & frame["condition"].notna()].head(n)
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


def _timed(fn: Callable[[], Any], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def raw_figures(model: Any, one: list[dict[str, Any]], thousand: list[dict[str, Any]],
                calls: int) -> dict[str, float]:
    """In-process p50 (ms) for one row and rows/s for 1000 rows: raw scikit-learn beside ONNX."""
    from threadpoolctl import threadpool_limits

    pipeline, schema = model.pipeline_, model.schema
    frame1, frame1000 = schema.validate_rows(one), schema.validate_rows(thousand)
    feeds = model.runner_.feeds(model.validate_columns(thousand).data) if model.runner_ else None

    def one_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with threadpool_limits(1):
                return fn()
        return run

    single = {"sklearn 1 row": lambda: pipeline.predict(frame1),
              "sklearn 1 row, 1 thread": one_thread(lambda: pipeline.predict(frame1)),
              "onnx 1 row": lambda: model.predict(one[0])}
    bulk = {"sklearn 1000": lambda: pipeline.predict(frame1000),
            "sklearn 1000, 1 thread": one_thread(lambda: pipeline.predict(frame1000)),
            "onnx 1000": lambda: model.predict(thousand)}
    if feeds is not None:
        bulk["onnx runtime alone 1000"] = lambda: model.runner_.run(feeds)
    times: dict[str, list[float]] = {k: [] for k in (*single, *bulk)}
    for _ in range(10):  # interleaved rounds: a busy moment hits every case alike
        for name, fn in single.items():
            times[name] += _timed(fn, calls // 10)
        for name, fn in bulk.items():
            times[name] += _timed(fn, 2)
    out = {f"{k} p50 ms": statistics.median(v) * 1000 for k, v in times.items() if k in single}
    out.update({f"{k} rows/s": 1000 / statistics.median(v) for k, v in times.items() if k in bulk})
    return out


def check_answers(server: Server, rows: list[dict[str, Any]], expected: np.ndarray) -> float:
    """Max |difference| between the server's answers and in-process scikit-learn on the same rows."""
    deadline = time.monotonic() + 120
    while True:  # BentoML says it is ready before its workers are
        try:
            r = httpx.post(server.url, json=server.body(rows), timeout=120)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)
    r.raise_for_status()
    got = np.asarray(server.predictions(r.json()), dtype=np.float64)
    return float(np.max(np.abs(got - expected[:len(rows)])))


def start_servers(frameworks: list[str], python: Path | None, problems: dict[str, str], home: Path, tmp: Path,
                  model_file: Path, sample: Path, args: argparse.Namespace) -> list[Server]:
    """modelyard and every framework not known to be broken, started together, once all are ready."""
    servers = [modelyard_server(home, free_port(), args.workers, tmp)]
    for name in frameworks:
        if name in problems or python is None:
            continue
        try:
            threads = None if args.competitor_threads == "default" else int(args.competitor_threads)
            if name == "mlflow":
                servers.append(mlflow_server(python, model_file, sample, free_port(), args.workers, tmp, threads))
            else:
                servers.append(bentoml_server(python, model_file, free_port(), args.workers, tmp, args.max_batch,
                                              threads))
        except Exception as exc:  # reported in the output; the others carry on
            problems[name] = f"{type(exc).__name__}: {str(exc)[-500:]}"
    ready = []
    for server in servers:
        try:
            ready.append(server.wait_ready())
        except RuntimeError as exc:
            if server.name == "modelyard":
                for other in servers:
                    other.stop()
                raise
            problems[server.name.lower()] = str(exc)[-500:]
    return ready


def compare(args: argparse.Namespace, prepare: Callable[..., Path]) -> None:
    frameworks = [f.strip().lower() for f in args.compare.split(",") if f.strip()]
    unknown = set(frameworks) - {"mlflow", "bentoml"}
    if unknown:
        raise SystemExit(f"--compare takes mlflow and/or bentoml, not {', '.join(sorted(unknown))}")
    client = pick_client(args.client)
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-compare-"))
    home = tmp / ".modelyard"
    try:
        print(f"training the house-price pipeline (100 trees) on {args.rows} rows ...", flush=True)
        model_file = prepare(home, None, args.rows)
        import modelyard
        from modelyard.config import Settings

        model = modelyard.load("house-prices", settings=Settings(home=home))
        rows = request_rows(1000)
        expected = model.pipeline_.predict(model.schema.validate_rows(rows))
        sample = write_body(tmp, "sample", rows[:300])
        print(f"in-process figures (fast path: {model.fast_path}) ...", flush=True)
        raw = raw_figures(model, rows[:1], rows, args.single)
        python, problems = bench_python(frameworks) if frameworks else (None, {})
        load_before = os.getloadavg()[0]
        results: dict[tuple[str, int, int], dict[str, Any]] = {}
        diffs: dict[str, float] = {}
        notes: dict[str, str] = {}
        for n, levels in PHASES:  # fresh servers per request size: no adaptive state carried over
            servers = start_servers(frameworks, python, problems, home, tmp, model_file, sample, args)
            try:
                bodies = {}
                for s in servers:
                    notes[s.name] = s.note
                    diffs[s.name] = max(diffs.get(s.name, 0.0), check_answers(s, rows[:n], expected))
                    bodies[s.name] = write_body(tmp, f"{s.name}-{n}", s.body(rows[:n]))
                    measure(client, s.url, bodies[s.name], 1, 2)  # warm-up, one client
                for i, c in enumerate(levels):
                    for s in servers[i % len(servers):] + servers[:i % len(servers)]:
                        r = results[(s.name, n, c)] = measure(client, s.url, bodies[s.name], c, args.duration)
                        print(f"  {s.name:<9} {n:>4} row(s) c={c:<3} {r['rps']:8.1f} req/s  p50 {r['p50']:8.2f} "
                              f"ms  p99 {r['p99']:8.2f} ms  errors {r['errors']}", flush=True)
            finally:
                for s in servers:
                    s.stop()
        load_after = os.getloadavg()[0]
        names = ["modelyard", *(x for x in ("MLflow", "BentoML") if x in notes)]
        report(args, client, names, notes, problems, diffs, results, raw, _logged(home), (load_before, load_after))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _logged(home: Path) -> int:
    from sqlalchemy import func, select

    from modelyard.config import Settings
    from modelyard.registry import Registry
    from modelyard.registry.tables import predictions

    with Registry(Settings(home=home)).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar() or 0)


def report(args: argparse.Namespace, client: str, names: list[str], notes: dict[str, str],
           problems: dict[str, str], diffs: dict[str, float], results: dict[tuple[str, int, int], dict[str, Any]],
           raw: dict[str, float], logged: int, load: tuple[float, float]) -> None:
    print(f"\nSame pipeline, {args.workers} workers each, load by {client}, {args.duration:.0f} s per cell, one run "
          f"(load average {load[0]:.1f} before, {load[1]:.1f} after, {os.cpu_count()} cores shared with others)")
    for name in names:
        print(f"  {name}: {notes[name]}; max |answer - in-process scikit-learn| {diffs[name]:.3g}")
    for name, why in problems.items():
        print(f"  {name}: NOT measured: {why}")
    print("\n| request | conc | server | req/s | rows/s | p50 ms | p99 ms | errors |\n"
          "|---|---|---|---|---|---|---|---|")
    for n, c in CELLS:
        for name in names:
            r = results[(name, n, c)]
            print(f"| {n} row{'s' if n > 1 else ''} | {c} | {name} | {r['rps']:.1f} | {r['rps'] * n:,.0f} | "
                  f"{r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")
    others = [n for n in names if n != "modelyard"]
    if others:
        head = " | ".join(f"req/s vs {o} | p50 vs {o}" for o in others)
        print(f"\nratios, modelyard / other (req/s: higher is better; p50: lower is better)\n"
              f"| request | conc | {head} |\n|---|---|" + "---|---|" * len(others))
        for n, c in CELLS:
            me = results[("modelyard", n, c)]
            cells = " | ".join(f"{me['rps'] / results[(o, n, c)]['rps']:.2f}x | "
                               f"{me['p50'] / results[(o, n, c)]['p50']:.2f}x" for o in others)
            print(f"| {n} | {c} | {cells} |")
    print("\nin-process, same run (no HTTP): " + "; ".join(
        f"{k} {v:,.2f}" if "ms" in k else f"{k} {v:,.0f}" for k, v in raw.items()))
    answered = sum(r["requests"] for (name, _, _), r in results.items() if name == "modelyard")
    print(f"prediction log (on): {logged} records for {answered} measured requests (+ warm-up and checks)")
    goals(results, raw, others)


def goals(results: dict[tuple[str, int, int], dict[str, Any]], raw: dict[str, float], others: list[str]) -> None:
    me32 = results[("modelyard", 1, 32)]["rps"]
    lines = []
    for other, target in (("MLflow", 15.0), ("BentoML", 4.0)):
        if other in others:
            ratio = me32 / results[(other, 1, 32)]["rps"]
            lines.append((f"1 row, c=32: >= {target:.0f}x {other}'s req/s", ratio, ratio >= target))
        else:
            lines.append((f"1 row, c=32: >= {target:.0f}x {other}'s req/s", float("nan"), None))
    # against the faster of raw scikit-learn's two settings (default threads, one thread): the stricter test
    best_p50 = min(raw["sklearn 1 row p50 ms"], raw["sklearn 1 row, 1 thread p50 ms"])
    best_rows = max(raw["sklearn 1000 rows/s"], raw["sklearn 1000, 1 thread rows/s"])
    p50 = results[("modelyard", 1, 1)]["p50"] / best_p50
    lines.append(("1 row, c=1: p50 <= 0.5x raw scikit-learn 1-row predict", p50, p50 <= 0.5))
    for c in (1, 4):
        rows = results[("modelyard", 1000, c)]["rps"] * 1000 / best_rows
        lines.append((f"1000 rows, c={c}: rows/s >= 1.0x raw scikit-learn on 1000 rows", rows, rows >= 1.0))
    print("\ngoals (issue 4; raw scikit-learn = the faster of its default and its one-thread figure)")
    for text, value, met in lines:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        print(f"  {text:<62} {value:8.2f}x  {verdict}")

"""Stream throughput end to end: one ``modelyard stream`` process on NATS JetStream, prediction log on.

    python benchmarks/stream.py [--messages 20000] [--batch-size 100,500] [--rounds 1]

The example house-price model (the example spec as it is: 100 boosting iterations, trained on
``--train-rows`` rows) is published as ``production`` in a temporary SQLite registry (the default log
store). For each ``--batch-size``, a backlog of ``--messages`` messages is published to a fresh JetStream
stream first; then one ``modelyard stream`` process starts and the clock runs from its first answer (a
warm-up message) until every answer has arrived on the output subject: messages/s end to end (fetch,
parse, validate, predict, log, publish with confirmation, ack). Beside it, in-process ``Model.predict``
on the same rows in batches of the same size (one native thread), the ceiling the consumer works under,
and the CPU seconds the consumer's processes (it and its children) spent per 1,000 messages while they
answered: a figure other load on the machine changes less than the rate.
Goal (issue 17): >= 20,000 messages/s. Needs NATS JetStream on 127.0.0.1:4222.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import psutil  # noqa: E402
from benchmarks._loadgen import cpu_jiffies, steal_since  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.conftest import EXAMPLES, cli_env, generate_houses  # noqa: E402
from tests.stream_kits import NatsKit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from modelyard.config import Settings  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.predlog import segments  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.registry.db import get_engine  # noqa: E402
from modelyard.registry.tables import predictions  # noqa: E402
from modelyard.runtime import Model  # noqa: E402


def inprocess_rate(model: Model, rows: list[dict[str, object]], batch: int) -> float:
    with threadpool_limits(1, user_api="openmp"):  # as the consumer predicts
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            model.predict(rows[i:i + batch])
        return len(rows) / (time.perf_counter() - started)


ROLES = {"fetch_handed": "fetcher", "publish_in_child": "publisher", "ship_in_child": "shipper"}


def logged_rows(settings: Settings) -> int:
    """Prediction records in the log's database so far (every run of this benchmark shares it)."""
    with get_engine(settings.resolved_database_url).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar() or 0)


def cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """(role, CPU seconds so far: user + system) of process ``pid`` (the consumer) and of each child."""
    out = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times, command = proc.cpu_times(), " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        role = next((r for key, r in ROLES.items() if key in command), "consumer" if proc is root else "child")
        out[proc.pid] = (role, times.user + times.system)
    return out


async def consume(settings: Settings, rows: list[dict[str, object]], batch: int, extra: list[str],
                  src: Path) -> tuple[float, float, dict[str, float], float, float]:
    """(messages/s of one consumer over a backlog of ``rows``, seconds to the first answer, CPU seconds of
    the consumer's processes per 1,000 messages while it answered them, by role; then messages/s until the
    last record was in the log's database, and the CPU seconds per 1,000 messages of all its processes
    until then: the shipping child ships every 0.5 s, so a short run ends its answers before the shipping
    is done and the first figures leave part of the shipping out)."""
    kit = NatsKit()
    await kit.setup()
    received: set[str] = set()
    done = asyncio.Event()
    first: list[float] = []

    async def on_answer(msg) -> None:  # type: ignore[no-untyped-def]
        received.add(json.loads(msg.data)["id"])
        if not first:
            first.append(time.perf_counter())
        if len(received) >= len(rows) + 1:
            done.set()

    await kit.nc.subscribe(kit.out, cb=on_answer)
    in_log = logged_rows(settings)
    run = os.urandom(4).hex()  # the log keeps one record per request id: each run's ids are its own
    await kit.send([(f"{run}-warm", json.dumps(rows[0]).encode())])
    for i in range(0, len(rows), 5000):  # the backlog is in the stream before the consumer starts
        await kit.send([(f"{run}-t{i + j}", json.dumps(r).encode()) for j, r in enumerate(rows[i:i + 5000])])
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "stream", "house-prices", "--broker", kit.url, "--in",
         kit.in_subject, "--out", kit.out, "--batch-size", str(batch), *extra],
        env={**cli_env(settings), "PYTHONPATH": str(src)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not first:
            if proc.poll() is not None:
                raise RuntimeError(f"modelyard stream ended: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            await asyncio.sleep(0.005)
        t0 = first[0]
        before = cpu_seconds(proc.pid)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - t0
        after = cpu_seconds(proc.pid)
        cpu: dict[str, float] = {}
        for p, (role, seconds) in after.items():
            cpu[role] = cpu.get(role, 0.0) + (seconds - before.get(p, (role, 0.0))[1]) / len(rows) * 1000
        deadline = time.monotonic() + 120
        while logged_rows(settings) < in_log + len(rows) + 1:  # the warm-up message is logged too
            if time.monotonic() > deadline:
                backlog = segments.backlog(settings.resolved_spill_dir).to_dict()
                raise RuntimeError(f"the log holds {logged_rows(settings) - in_log} of {len(rows) + 1} records "
                                   f"two minutes after the last answer; the segments: {backlog}")
            await asyncio.sleep(0.01)
        shipped = time.perf_counter() - t0
        final = cpu_seconds(proc.pid)
        total = sum(seconds - before.get(p, (role, 0.0))[1] for p, (role, seconds) in final.items())
        return len(rows) / elapsed, t0 - started, cpu, len(rows) / shipped, total / len(rows) * 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        await kit.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch-size", default="100,500", help="comma-separated --batch-size values")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--extra", default="", help="more `modelyard stream` options, space-separated")
    parser.add_argument("--baseline-src", type=Path,
                        help="Also run the consumer of another tree's src/ (an earlier commit), alternating.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        folder = Path(tmp)
        generate_houses(args.train_rows, seed=11).to_csv(folder / "houses.csv", index=False)
        (folder / "spec.toml").write_text((EXAMPLES / "house_prices" / "spec.toml").read_text())
        train(load_spec(folder / "spec.toml")).write_bundle(folder / "bundle")
        settings = Settings(home=folder / ".modelyard")
        registry = Registry(settings)
        registry.publish(folder / "bundle", alias="production")
        model = Model.load(registry.load("house-prices"))
        rows = json.loads(generate_houses(args.messages, seed=5).drop(columns=["price"], errors="ignore")
                          .to_json(orient="records"))
        rows = [{k: v for k, v in r.items() if k in model.schema.names} for r in rows]
        print(f"house-prices (example spec), {args.messages:,} messages per run; {os.cpu_count()} CPUs, load "
              f"average {os.getloadavg()[0]:.1f}; log in SQLite (durability process)", flush=True)
        trees = {"this tree": ROOT / "src"}
        if args.baseline_src is not None:
            trees["baseline"] = args.baseline_src.resolve()
        for batch in [int(b) for b in args.batch_size.split(",")]:
            for round_ in range(args.rounds):
                for label, src in (trees.items() if round_ % 2 == 0 else reversed(trees.items())):
                    before = cpu_jiffies()
                    rate, startup, cpu, logged_rate, logged_cpu = asyncio.run(
                        consume(settings, rows, batch, args.extra.split(), src))
                    steal = steal_since(before)
                    raw = inprocess_rate(model, rows, batch)
                    print(f"{label:<9} batch {batch:>5} round {round_ + 1}: {rate:9,.0f} msgs/s end to end (goal "
                          f">= 20,000; start-up {startup:.1f}s), {sum(cpu.values()):.3f} CPU s per 1,000 messages "
                          f"({', '.join(f'{r} {c:.3f}' for r, c in cpu.items())}); in-process Model.predict in "
                          f"batches of {batch}: "
                          f"{raw:,.0f} rows/s; ratio {rate / raw:.2f}; load average {os.getloadavg()[0]:.1f}; "
                          f"every record in the log's database: {logged_rate:,.0f} msgs/s, "
                          f"{logged_cpu:.3f} CPU s per 1,000 messages; CPU steal {100 * steal:.0f}%",
                          flush=True)


if __name__ == "__main__":
    main()

"""Events learnt per second by one ``modelyard learn`` process, with the house-price example features.

    python benchmarks/learn.py [--events 100000] [--fetch-batch 5000] [--publish-every 10000]

A backlog of labelled events (the 16 example inputs and the price, JSON, ``Nats-Msg-Id`` set as a producer
would) is put on a fresh JetStream stream; one learner with examples/house_prices/online.toml (SGDRegressor,
partial_fit per 1000 events, a version every ``--publish-every`` events with its ONNX copy; the example turns
global importance off) consumes it, as ``modelyard learn`` runs: the learner process with its fetching child
and its bundle-writing child. The rate is measured between its first published version and the one that
covers the whole backlog (the registry's publish times), so process start-up and the warm-up are not
counted, and publishing is (the goal is >= 20k events/s). The learner's log gives how long each version took
to be written and published. For comparison: the same events fed to ``OnlineLearner`` in process, without a
broker, in calls of 1000.

Figures: on the idle 2-core machine (load 0.9-1.0) 36,119 and 34,115 events/s (a version written and
published in 0.31-0.32 s, median). On the shared machine, other work running: 16,050 events/s at load 7.5
(10.8k-22.0k across runs at loads 5.4-8.6; a version written and published in 0.4-1.1 s, median;
``--publish-every 50000``: 20,459 at load 7); before the batch-at-once learning, the pull protocol and the
child processes: 5,250 events/s at load 5.9 the same day (363/s at load 32 earlier).

Needs NATS JetStream on 127.0.0.1:4222; uses a temporary registry and its own stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.conftest import EXAMPLES, cli_env, generate_houses  # noqa: E402
from tests.stream_kits import NatsKit, labelled_events  # noqa: E402

from modelyard.config import Settings  # noqa: E402
from modelyard.pipeline import load_spec  # noqa: E402
from modelyard.pipeline.lineage import stream_lineage  # noqa: E402
from modelyard.pipeline.online import Event, OnlineLearner  # noqa: E402
from modelyard.registry import Registry  # noqa: E402

NAME = "house-prices-online"


def chain(settings: Settings) -> list[tuple[float, int]]:
    """(seen at, last sequence) of every published version."""
    registry = Registry(settings)
    if NAME not in registry.models():
        return []
    out = []
    for record in registry.versions(NAME):
        lineage = stream_lineage(record.manifest.lineage)
        assert lineage is not None
        out.append((record.created_at.timestamp(), lineage.last_seq))
    return out


def in_process(spec_path: Path, events: list[bytes], every: int) -> float:
    spec = load_spec(spec_path)
    spec.training.publish_every = every
    learner = OnlineLearner(spec)
    items = [Event(i + 1, str(i + 1), data) for i, data in enumerate(events)]
    learner.feed(items[:every])  # the warm-up and the first range, as in the process measurement
    learner.cut()
    started, done = time.perf_counter(), every
    while done < len(items):
        n, _ = learner.feed(items[done:done + 1000])
        done += n
        if learner.due:
            learner.cut()
    return (len(items) - every) / (time.perf_counter() - started)


async def bench(args: argparse.Namespace) -> None:
    frame = generate_houses(args.events, seed=3)
    events = labelled_events(frame)
    spec = EXAMPLES / "house_prices" / "online.toml"
    kit = NatsKit()
    await kit.setup()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / ".modelyard")
        folder = Path(tmp) / "spec"
        folder.mkdir()
        text = spec.read_text().replace("publish_every = 10000", f"publish_every = {args.publish_every}")
        (folder / "online.toml").write_text(text)
        proc = None
        try:
            for start in range(0, len(events), 20_000):
                await kit.send([(f"e{start + i}", data) for i, data in enumerate(events[start:start + 20_000])])
            log = Path(tmp) / "learn.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard", "learn", NAME, "--spec", str(folder / "online.toml"),
                 "--broker", kit.url, "--in", kit.in_subject, "--fetch-batch", str(args.fetch_batch)],
                env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=log.open("wb"))
            deadline = time.monotonic() + 600
            versions = chain(settings)  # polled once a second: the times are the registry's, not the poll's
            while (not versions or versions[-1][1] < len(events)) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(log.read_text()[-3000:])
                await asyncio.sleep(1.0)
                versions = chain(settings)
            (t0, s0), (t1, s1) = versions[0], versions[-1]
            rate = (s1 - s0) / (t1 - t0)
            print(f"modelyard learn, 1 process, backlog of {len(events):,} events, fetch batch {args.fetch_batch}, "
                  f"a version every {args.publish_every:,} ({len(versions)} versions, each with "
                  f"its ONNX copy): {rate:,.0f} events/s (between v1 at sequence {s0:,} and v{len(versions)} at "
                  f"{s1:,})")
            took = sorted(float(t) for t in re.findall(r"written and published in ([0-9.]+) s", log.read_text()))
            if took:
                print(f"  a version written (child process) and published: median {took[len(took) // 2]:.2f} s, "
                      f"max {took[-1]:.2f} s")
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(300)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            await kit.teardown()
        raw = in_process(folder / "online.toml", events, args.publish_every)
        print(f"OnlineLearner.feed in process (no broker, same events, versions cut but not written): "
              f"{raw:,.0f} events/s")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--fetch-batch", type=int, default=5000)
    parser.add_argument("--publish-every", type=int, default=10_000)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()

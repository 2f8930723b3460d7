"""``modelyard learn`` on real NATS JetStream: a concept change the versions follow, a version rebuilt bit for
bit from its recorded range, dead letters with reasons, and a SIGKILLed learner that counts every event once."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.config import Settings
from modelyard.errors import LineageMismatchError
from modelyard.pipeline import load_spec
from modelyard.pipeline.lineage import StreamLineage, stream_lineage
from modelyard.pipeline.reproduce import reproduce_online
from modelyard.registry import Registry
from modelyard.stream.learner import StreamLearner, replay
from tests.conftest import EXAMPLES, cli_env, generate_houses, run_cli
from tests.stream_kits import NatsKit, labelled_events
from tests.support import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.slow]
EVERY, HALF = 1500, 6000  # a version per 1500 good events; the concept changes after 6000


def online_spec(folder: Path, name: str, **training: Any) -> Path:
    """The example online spec, quick to publish (no ONNX copy, no importance) unless told otherwise."""
    text = (EXAMPLES / "house_prices" / "online.toml").read_text().replace(
        'name = "house-prices-online"', f'name = "{name}"')
    options = {"publish_every": EVERY, "publish_minutes": None, "fast_path": False, "importance": False,
               **training}
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in options:
            continue
        lines.append(line)
        if line.strip() == "[training]":
            lines += [f"{k} = {json.dumps(v)}" for k, v in options.items() if v is not None]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "online.toml").write_text("\n".join(lines) + "\n")
    return folder / "online.toml"


def concept(rows: int, seed: int, changed: bool) -> pd.DataFrame:
    """House prices; after the change the same houses sell for 1.6 times as much (y|X moves, X does not)."""
    frame = generate_houses(rows, seed=seed)
    if changed:
        frame["price"] = (frame["price"] * 1.6).round(-2)
    return frame


BAD = [b'{"area_sqm": ', b'"just a string"', b"[1, 2]"]


def bad_events(good: pd.DataFrame) -> list[tuple[bytes, str]]:
    """Events the learner must dead-letter, each with a phrase its reason must contain."""
    row = json.loads(good.iloc[[0]].to_json(orient="records"))[0]
    no_price = {k: v for k, v in row.items() if k != "price"}
    no_hood = {k: v for k, v in row.items() if k != "neighborhood"}
    return [(BAD[0], "not valid JSON"), (BAD[1], "expected a JSON object"), (BAD[2], "expected a JSON object"),
            (json.dumps(no_price).encode(), "the outcome 'price' is missing"),
            (json.dumps({**row, "price": "a lot"}).encode(), "must be a finite number"),
            (json.dumps({**row, "year_built": "last year"}).encode(), "'last year' is not a number"),
            (json.dumps(no_hood).encode(), "missing column 'neighborhood'")]


@dataclass
class Run:
    kit: NatsKit
    settings: Settings
    name: str
    versions: list[tuple[int, StreamLineage, dict[str, float]]]
    sent: int
    bad: dict[str, str]  # message id -> phrase of its reason
    change_seq: int
    letters: list[dict[str, Any]]


def _versions(settings: Settings, name: str) -> list[tuple[int, StreamLineage, dict[str, float]]]:
    out = []
    registry = Registry(settings)
    for record in registry.versions(name) if name in registry.models() else []:
        lineage = stream_lineage(record.manifest.lineage)
        assert lineage is not None
        out.append((record.version, lineage, record.manifest.metrics))
    return out


@pytest.fixture(scope="module")
def concept_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One in-process learner over 12 000 good events (the concept changes half-way) and 7 bad ones."""
    folder = tmp_path_factory.mktemp("online")
    settings = Settings(home=folder / ".modelyard")
    spec = load_spec(online_spec(folder, "houses-online", warmup=500, batch_size=500))
    good = pd.concat([concept(HALF, 1, False), concept(HALF, 2, True)], ignore_index=True)
    items = [(f"g{i}", data) for i, data in enumerate(labelled_events(good))]
    bad = bad_events(good)
    for n, (data, _) in enumerate(bad):  # spread through the stream, none after the last good event
        items.insert(700 + n * 1600, (f"bad{n}", data))
    change_seq = 1 + next(i for i, (msg_id, _) in enumerate(items) if msg_id == f"g{HALF}")
    kit = NatsKit()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kit.setup())
    try:
        loop.run_until_complete(kit.send(items))
        learner = StreamLearner(Registry(settings), spec, broker_url=kit.url, in_subject=kit.in_subject)

        async def learn() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(learner.run(stop))
            while sum(v.messages for _, v, _ in _versions(settings, spec.name)) < len(items) - 100:
                await asyncio.sleep(0.2)
                if task.done():
                    break
            stop.set()
            await task

        loop.run_until_complete(asyncio.wait_for(learn(), 120))
        letters = loop.run_until_complete(kit.read(kit.dlq))
        yield Run(kit, settings, spec.name, _versions(settings, spec.name), len(items),
                  {f"bad{n}": phrase for n, (_, phrase) in enumerate(bad)}, change_seq, letters)
    finally:
        loop.run_until_complete(kit.teardown())
        loop.close()


def _mae(settings: Settings, name: str, version: int, frame: pd.DataFrame) -> float:
    import modelyard

    model = modelyard.load(f"{name}@{version}", settings=settings)
    return float(np.mean(np.abs(model.predict(frame.drop(columns=["price"])) - frame["price"].to_numpy())))


def test_versions_held_out_error_follows_the_concept_change(concept_run: Run) -> None:
    run = concept_run
    assert len(run.versions) == 2 * HALF // EVERY  # 8 ranges of exactly EVERY good events (the last cut on stop)
    before = [v for v, s, _ in run.versions if s.last_seq < run.change_seq]
    after = [v for v, s, _ in run.versions if s.first_seq > run.change_seq + EVERY]  # a range after the change
    assert len(before) >= 3 and len(after) >= 2
    old, new = concept(2000, 21, False), concept(2000, 21, True)  # the same houses under both concepts
    for version in before:
        assert _mae(run.settings, run.name, version, old) < 0.7 * _mae(run.settings, run.name, version, new)
    for version in after:
        assert _mae(run.settings, run.name, version, new) < 0.7 * _mae(run.settings, run.name, version, old)
    # the stream's own held-out events (every 10th sequence) say the same in each version's metrics
    mae = {v: m["mae"] for v, _, m in run.versions}
    assert max(mae[v] for v in before) * 1.2 < min(mae[v] for v in after)
    assert all(m["r2"] > 0.7 for _, _, m in run.versions if _ not in before[:1])


def test_every_event_is_counted_once_in_contiguous_ranges(concept_run: Run) -> None:
    ranges = [s for _, s, _ in concept_run.versions]
    assert ranges[0].first_seq == 1 and ranges[0].parent_version is None
    for prev, (version, s, _) in zip(ranges, concept_run.versions[1:], strict=False):
        assert s.first_seq == prev.last_seq + 1 and s.parent_version == version - 1
    assert sum(s.messages for s in ranges) == concept_run.sent == ranges[-1].last_seq
    assert sum(s.learnt + s.held_out for s in ranges) == 2 * HALF
    assert {s.learnt + s.held_out for s in ranges} == {EVERY}


def test_a_version_replayed_from_its_recorded_range_reproduces_bit_for_bit(concept_run: Run) -> None:
    run = concept_run
    registry = Registry(run.settings)
    for version in (1, 6):  # the first of a chain (no parent), one after the change (on top of v5)
        bundle = registry.load_bundle(registry.get_version(run.name, version))
        lineage = stream_lineage(bundle.manifest.lineage)
        assert lineage is not None and lineage.stream == run.kit.streams[run.kit.in_subject]
        parent = registry.load_bundle(registry.get_version(run.name, version - 1)) if version > 1 else None
        events = replay(run.kit.url, lineage)
        report = reproduce_online(bundle, events, parent)
        assert report.identical and report.model_sha256 == bundle.manifest.files["model.joblib"]
        assert report.rows_compared == lineage.held_out
    # the comparison can fail: the same range replayed on top of another parent is not the same model
    wrong = registry.load_bundle(registry.get_version(run.name, 4))
    wrong.manifest = wrong.manifest.model_copy(update={"version": 5})
    with pytest.raises(LineageMismatchError, match="differs"):
        reproduce_online(bundle, events, wrong)


def test_bad_events_land_in_the_dead_letter_subject_with_a_reason(concept_run: Run) -> None:
    letters = {d["id"]: d for d in concept_run.letters}
    assert set(letters) == set(concept_run.bad)
    for msg_id, phrase in concept_run.bad.items():
        assert phrase in letters[msg_id]["reason"], letters[msg_id]
        assert letters[msg_id]["subject"] == concept_run.kit.in_subject
        assert letters[msg_id]["_headers"]["Modelyard-Reason"]
    assert sum(s.dead_lettered for _, s, _ in concept_run.versions) == len(concept_run.bad)


def _learner(settings: Settings, kit: NatsKit, spec: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard", "learn", "houses-kill", "--spec", str(spec), "--broker", kit.url,
         "--in", kit.in_subject, "--fetch-batch", "500"],
        env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_a_sigkilled_learner_resumes_from_its_last_version_counting_every_event_once(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".modelyard")
    spec = online_spec(tmp_path, "houses-kill", warmup=500, batch_size=500, publish_every=1000)
    frame = concept(6000, 3, False)
    good = [(f"g{i}", data) for i, data in enumerate(labelled_events(frame))]
    bad = [(f"bad{n}", data) for n, data in enumerate(BAD)]
    first = good[:1200] + bad[:2] + good[1200:3500] + bad[2:]  # 3 versions' worth and a half
    second = [*good[3500:3600], ("bad-late", BAD[0]), *good[3600:]]
    kit, log = NatsKit(), tmp_path / "learn.log"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kit.setup())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        loop.run_until_complete(kit.send(first))
        procs.append(_learner(settings, kit, spec, log))
        wait_until(lambda: len(_versions(settings, "houses-kill")) >= 2 or procs[0].poll() is not None, 90,
                   "two versions", interval=0.05)
        procs[0].send_signal(signal.SIGKILL)  # mid-stream: learnt events not yet published are in its memory
        procs[0].wait(30)
        at_kill = _versions(settings, "houses-kill")
        assert 2 <= len(at_kill) <= 3, log.read_text()[-3000:]  # 3500 sent: some learnt, not published
        loop.run_until_complete(kit.send(second))
        procs.append(_learner(settings, kit, spec, log))

        def settled() -> bool:
            if procs[1].poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            return sum(s.learnt + s.held_out for _, s, _ in _versions(settings, "houses-kill")) >= 6000

        wait_until(settled, 120, "every good event in a published range", interval=0.2)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(60) == 0, log.read_text()[-3000:]
        durable = loop.run_until_complete(kit.js.consumer_info(
            kit.streams[kit.in_subject], "modelyard-learn-houses-kill-" + kit.in_subject.replace(".", "_")))
        letters = loop.run_until_complete(kit.read(kit.dlq))
        # the first version the second learner published, on the killed one's (not always at_kill's last + 1:
        # a publish the kill cut short leaves its reserved number unused)
        resumed = next(v for v, _, _ in _versions(settings, "houses-kill") if v > at_kill[-1][0])
        done = run_cli("reproduce", "houses-kill", str(resumed), settings=settings)  # replayed from the stream
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        loop.run_until_complete(kit.teardown())
        loop.close()
    versions = _versions(settings, "houses-kill")
    ranges = [s for _, s, _ in versions]
    assert len(ranges) == 6 and {s.learnt + s.held_out for s in ranges} == {1000}
    for (before, prev, _), (_, s, _) in itertools.pairwise(versions):
        assert s.first_seq == prev.last_seq + 1 and s.parent_version == before  # across the kill too
    assert sum(s.messages for s in ranges) == len(first) + len(second)  # none lost, none twice
    assert sum(s.dead_lettered for s in ranges) == len(BAD) + 1
    assert {d["id"] for d in letters} == {"bad0", "bad1", "bad2", "bad-late"}
    assert durable.ack_floor.stream_seq == ranges[-1].last_seq  # acked up to the last published range
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bit for bit" in done.stdout


def test_a_learner_whose_fetching_process_dies_stops_and_the_next_one_counts_every_event_once(
        tmp_path: Path) -> None:
    """The fetching child holds events pulled but not handed over: when it dies, the learner must stop (not
    go on past a hole in the stream order), and the next learner resumes from the last published version."""

    from modelyard.stream.nats import FetcherError

    settings = Settings(home=tmp_path / ".modelyard")
    spec = load_spec(online_spec(tmp_path, "houses-fetcher", warmup=500, batch_size=500, publish_every=1000))
    items = [(f"g{i}", data) for i, data in enumerate(labelled_events(concept(5000, 4, False)))]
    kit = NatsKit()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kit.setup())
    try:
        # the first learner sees only the first 2,000 events (at 30k+ events/s it would otherwise learn all
        # 5,000 before the test sees its first version); the rest arrive after its fetcher died
        loop.run_until_complete(kit.send(items[:2000]))

        async def first() -> BaseException | None:
            learner = StreamLearner(Registry(settings), spec, broker_url=kit.url, in_subject=kit.in_subject,
                                    fetch_batch=300)
            task = asyncio.create_task(learner.run(asyncio.Event()))
            while not _versions(settings, spec.name) and not task.done():
                await asyncio.sleep(0.05)
            pid = learner.broker.fetcher_pid
            assert pid is not None and not task.done()
            os.kill(pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(task, 60)
            except BaseException as exc:
                return exc
            return None

        error = loop.run_until_complete(first())
        assert isinstance(error, FetcherError), error
        stopped_at = _versions(settings, spec.name)
        assert stopped_at and stopped_at[-1][1].last_seq <= 2000
        loop.run_until_complete(kit.send(items[2000:]))

        async def second() -> None:
            learner = StreamLearner(Registry(settings), spec, broker_url=kit.url, in_subject=kit.in_subject)
            stop = asyncio.Event()
            task = asyncio.create_task(learner.run(stop))
            while sum(v.messages for _, v, _ in _versions(settings, spec.name)) < len(items) and not task.done():
                await asyncio.sleep(0.1)
            stop.set()
            await task

        loop.run_until_complete(asyncio.wait_for(second(), 120))
    finally:
        loop.run_until_complete(kit.teardown())
        loop.close()
    ranges = [s for _, s, _ in _versions(settings, spec.name)]
    assert len(ranges) == 5 and ranges[0].first_seq == 1
    for prev, s in itertools.pairwise(ranges):
        assert s.first_seq == prev.last_seq + 1  # across the fetcher's death: no hole, no overlap
    assert sum(s.messages for s in ranges) == len(items) == ranges[-1].last_seq

"""Lose nothing in a crash: every answered prediction is in a write-ahead segment before its answer leaves.

A real ``modelyard serve`` (1 and 2 workers) on SQLite and PostgreSQL takes 16 concurrent clients sending
1-row requests with their own X-Request-ID; its whole process group is SIGKILLed mid-load; the restarted
server ships what the dead one left. Every answered id must be in the log exactly once. Then: a shipper
SIGKILLed mid-segment adds no duplicate; a PostgreSQL cut plus a SIGKILL during the outage loses nothing;
a segment folder that cannot be written (a regular file where a folder should be; a full 64 KiB tmpfs)
answers 503 with Retry-After and never answers unlogged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, segments
from modelyard.registry.db import get_engine
from modelyard.registry.tables import predictions
from tests.conftest import cli_env, train_and_publish
from tests.integration.serving import LoadLoop, fresh_pg_database, house_rows
from tests.integration.test_predlog_outage import TcpProxy
from tests.support import Server, house_spec_in, wait_until

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
SQLITE = [pytest.param("sqlite", id="sqlite")]  # the segment folder's faults: no database is reached
POSTGRES = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_spec_in(tmp_path_factory.mktemp("crash-spec"))


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, spec: Path, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        cfg = Settings(home=tmp_path / ".modelyard")
        train_and_publish(spec, cfg)
        yield cfg
        return
    with fresh_pg_database() as url:
        cfg = Settings(home=tmp_path / ".modelyard", database_url=url)
        train_and_publish(spec, cfg)
        yield cfg


def logged(settings: Settings) -> dict[str, int]:
    engine = get_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id))
        return {r[0]: int(r[1]) for r in rows}


def total_rows(settings: Settings) -> int:
    with get_engine(settings.resolved_database_url).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar() or 0)


def load(server: Server) -> LoadLoop:
    return LoadLoop(f"{server.url}/v1/models/house-prices/predict", {"instances": house_rows(1)}, threads=16)


def _shipping_children(server: Server) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if "ship_in_child" in " ".join(p.cmdline())]


@pytest.mark.parametrize(("settings", "workers", "child"), [  # one worker on the embedded default, two on
    pytest.param("sqlite", 1, False, id="sqlite-1"),  # PostgreSQL; one shipping from a child process
    pytest.param("sqlite", 1, True, id="sqlite-1-ship-in-child"),
    pytest.param("postgres", 2, False, id="postgres-2", marks=pytest.mark.postgres),
], indirect=["settings"])
def test_sigkill_of_the_whole_server_mid_load_loses_no_answered_prediction(
    settings: Settings, workers: int, child: bool, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    env = {"MODELYARD_LOG_SHIP_IN_CHILD": "true"} if child else {}
    server = Server(settings, tmp_path / "killed.log", workers=workers, **env).wait_ready()
    assert len(_shipping_children(server)) == (1 if child else 0)
    loop = load(server).start()
    try:
        loop.wait_for(1500, timeout=120)
        if child:  # the child ships while the worker answers
            wait_until(lambda: total_rows(settings) > 0, 30, "the shipping child's first rows")
    finally:
        server.kill_group()  # mid-load: clients are still sending
        loop.stop()
    answered = loop.ok_ids()
    assert answered and {a.status for a in loop.answers} == {200}
    left = segments.backlog(settings.resolved_spill_dir)
    restarted = Server(settings, tmp_path / "restart.log").wait_ready()
    try:
        wait_until(lambda: answered <= set(logged(settings)), 90, "every answered id in the log")
    except AssertionError as exc:
        missing = sorted(answered - set(logged(settings)))
        raise AssertionError(f"{exc}: {len(missing)} missing, e.g. {missing[:3]}; now "
                             f"{segments.backlog(settings.resolved_spill_dir)}; restart log:\n"
                             f"{restarted.log()[-3000:]}\nkilled log:\n{server.log()[-3000:]}") from None
    finally:
        restarted.stop()
    kept = logged(settings)
    duplicated = [rid for rid in answered if kept[rid] != 1]
    print(f"\n[{request.node.name}] answered {len(answered)}, kept {len(answered & set(kept))}, "
          f"left in segments at the kill {left.records} records / {left.segments} segments, "
          f"duplicated {len(duplicated)}")
    assert not duplicated
    assert not segments.segments(settings.resolved_spill_dir)


def _segment_of(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wal-1-1-big.jsonl"
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write(segments.dumps_record(PredictionRecord(
                request_id=f"big-{i}", model="house-prices", version=1, inputs=[{"area_sqm": i}],
                outputs=[float(i)])) + b"\n")
    return path


def _ship(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "modelyard", "log", "ship"], env=cli_env(settings, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_of_the_shipper_mid_segment_leaves_no_duplicate_row(settings: Settings) -> None:
    n = 10_000
    path = _segment_of(settings.resolved_spill_dir, n)
    shipper = _ship(settings, MODELYARD_LOG_BATCH_SIZE="100")
    try:
        wait_until(lambda: total_rows(settings) >= 500 or shipper.poll() is not None, 60,
                   "the shipper to be mid-segment", interval=0.02)
    finally:
        shipper.send_signal(signal.SIGKILL)
        shipper.wait(10)
    partial = total_rows(settings)
    assert 0 < partial < n, f"the shipper was not killed mid-segment ({partial} of {n} rows)"
    assert path.exists()  # deleted only once the database has all of it
    again = _ship(settings)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out.decode()
    assert total_rows(settings) == n and len(logged(settings)) == n  # every record once, none twice
    assert not path.exists()
    print(f"\n[shipper kill] killed after {partial} of {n} rows; after the second ship: {total_rows(settings)}")


@pytest.mark.postgres
def test_postgres_cut_then_sigkill_during_the_outage_loses_nothing(spec: Path, tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        direct = Settings(home=tmp_path / ".modelyard", database_url=url)
        train_and_publish(spec, direct)
        proxy = TcpProxy(int(url.rsplit(":", 1)[1].split("/")[0]))
        try:
            through = Settings(home=direct.home, database_url=url.replace(":5432/", f":{proxy.port}/"))
            server = Server(through, tmp_path / "cut.log", workers=2, MODELYARD_RELOAD_INTERVAL="0.5").wait_ready()
            loop = load(server).start()
            try:
                loop.wait_for(300, timeout=60)
                proxy.cut()
                before = loop.count()
                loop.wait_for(500, timeout=60)  # answered while the database is away
                # at 500 answers in about a second, a shipper may not have tried the database yet: the kill
                # comes once one of them has found it away (and said so), not at a moment picked by the clock
                wait_until(lambda: segments.read_ship_error(direct.resolved_spill_dir) is not None, 30,
                           "a shipper to record that the database is away")
                during = loop.count() - before
            finally:
                server.kill_group()
                loop.stop()
            answered = loop.ok_ids()
            assert answered and not answered <= set(logged(direct))  # some only in segments at the kill
            left = segments.backlog(direct.resolved_spill_dir)
            assert left.records > 0 and left.last_ship_error is not None
            proxy.restore()
            restarted = Server(through, tmp_path / "cut-restart.log").wait_ready()
            try:
                wait_until(lambda: answered <= set(logged(direct)), 60, "every answered id after the outage")
            finally:
                restarted.stop()
            kept = logged(direct)
            assert all(kept[rid] == 1 for rid in answered)
            print(f"\n[pg cut + SIGKILL] answered {len(answered)} ({during} during the outage), kept "
                  f"{len(answered & set(kept))}, {left.records} records waited in {left.segments} segments")
        finally:
            proxy.close()


def _refusing_server(settings: Settings, folder: Path, tmp_path: Path, name: str) -> None:
    """Load against a server whose segment folder fails: 503 + Retry-After, /readyz unready, no 200 unlogged."""
    server = Server(settings, tmp_path / f"{name}.log", MODELYARD_SPILL_DIR=str(folder)).wait_ready()
    loop = load(server)
    loop.max_requests = 2000
    try:
        loop.start()
        wait_until(lambda: any(a.status == 503 for a in loop.answers), 60, "a 503")
        loop.wait_for(200, timeout=60)
        loop.stop()
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and "prediction_log_error" in ready.json()
        r = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": house_rows(1)},
                       headers={"X-Request-ID": "probe"}, timeout=10)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["code"] == "prediction_log_unavailable"
        assert server.metric("modelyard_log_write_failures_total") > 0
    finally:
        loop.stop()
        server.stop()
    ok = loop.ok_ids()
    kept = logged(settings)
    assert ok <= set(kept), f"{len(ok - set(kept))} answered but never logged"  # answered => logged
    refused = [a for a in loop.answers if a.status == 503]
    assert refused and all("prediction log cannot be written" in (a.error or "") for a in refused)
    print(f"\n[{name}] {len(ok)} answered (all logged), {len(refused)} refused with 503")


@pytest.mark.parametrize("settings", SQLITE, indirect=True)
def test_an_unwritable_segment_folder_refuses_with_503(settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file: mkdir under it fails with ENOTDIR, even for root")
    _refusing_server(settings, blocker / "wal", tmp_path, "unwritable")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mount / "wal").mkdir()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)  # fill it: shipping frees segments, not this
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 1024)
        os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("settings", SQLITE, indirect=True)
def test_a_full_segment_folder_refuses_with_503(settings: Settings, tmp_path: Path, tiny_tmpfs: Path) -> None:
    _refusing_server(settings, tiny_tmpfs / "wal", tmp_path, "full")


@pytest.mark.nats
@pytest.mark.parametrize("settings", POSTGRES, indirect=True)
def test_a_stream_consumer_sigkilled_after_publishing_leaves_a_record_of_every_answer(
    settings: Settings, tmp_path: Path,
) -> None:
    import asyncio
    import json

    from tests.stream_kits import NatsKit

    rows = house_rows(3000, seed=5)
    kit = NatsKit()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kit.setup())
    consumer: subprocess.Popen[bytes] | None = None
    try:
        loop.run_until_complete(kit.send([(f"s{i}", json.dumps(r).encode()) for i, r in enumerate(rows)]))
        consumer = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "stream", "house-prices", "--broker", kit.url, "--in",
             kit.in_subject, "--out", kit.out, "--batch-size", "50"],
            env=cli_env(settings, MODELYARD_LOG_FLUSH_INTERVAL="30"),  # nothing shipped before the kill
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: loop.run_until_complete(kit.count(kit.out)) >= 500, 120, "500 answers", interval=0.02)
        consumer.send_signal(signal.SIGKILL)  # mid-stream: answers published, batches in hand
        consumer.wait(10)
        answers = loop.run_until_complete(kit.read(kit.out))
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        loop.run_until_complete(kit.teardown())
        loop.close()
    answered = {a["id"] for a in answers}
    assert 500 <= len(answered) < len(rows)
    shipped = _ship(settings)  # no consumer restarted, no redelivery: the records come from the segments
    out, _ = shipped.communicate(timeout=120)
    assert shipped.returncode == 0, out.decode()
    kept = logged(settings)
    missing = answered - set(kept)
    print(f"\n[stream SIGKILL] {len(answered)} answered before the kill, {len(answered) - len(missing)} in the "
          f"log, {len(missing)} missing")
    assert not missing and all(kept[i] == 1 for i in answered)

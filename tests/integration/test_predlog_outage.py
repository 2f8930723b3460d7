"""The prediction log survives its database going away: a TCP proxy between the server and the real
PostgreSQL is cut mid-load and restored; every answered request id ends up in the database exactly once.
And when the server is stopped (SIGTERM) while the database is away, the spilled records reach it after
the restart."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from modelyard.config import Settings
from modelyard.predlog import segments as spill  # the write-ahead segments (were spill files)
from tests.conftest import train_and_publish
from tests.integration.serving import LoadLoop, fresh_pg_database, house_rows
from tests.support import Server, free_port, wait_until
from tests.support.serving import house_spec_in

pytestmark = pytest.mark.postgres


class TcpProxy:
    """127.0.0.1:<port> → 127.0.0.1:<target>. ``cut()`` closes the listener and aborts every connection
    (clients see a refused or reset connection, as when a database host goes away); ``restore()`` listens
    again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.restore()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._transports -= pair

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._start())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, TcpProxy]]:
    folder = tmp_path_factory.mktemp("predlog_outage")
    with fresh_pg_database() as url:
        direct = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), direct)
        proxy = TcpProxy(int(url.rsplit(":", 1)[1].split("/")[0]))
        try:
            yield folder, url, proxy
        finally:
            proxy.close()


def _logged(url: str) -> dict[str, int]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT request_id, count(*) FROM modelyard_predictions GROUP BY request_id"))
            return {r[0]: int(r[1]) for r in rows}
    finally:
        engine.dispose()


def _through(url: str, proxy: TcpProxy) -> str:
    return url.replace(":5432/", f":{proxy.port}/")


def test_log_database_cut_mid_load_then_restored_every_answer_logged_once(
    setup: tuple[Path, str, TcpProxy],
) -> None:
    folder, url, proxy = setup
    home = folder / ".modelyard"
    settings = Settings(home=home, database_url=_through(url, proxy))
    server = Server(settings, folder / "outage.log", MODELYARD_LOG_FLUSH_INTERVAL="0.1",
                    MODELYARD_RELOAD_INTERVAL="0.5").wait_ready()
    loop = LoadLoop(f"{server.url}/v1/models/house-prices/predict", {"instances": house_rows(2)}, threads=3)
    try:
        loop.start()
        loop.wait_for(60)
        proxy.cut()
        wait_until(lambda: server.metric("modelyard_prediction_log_spilled_total") > 0, 30,
                   "records to be spilled while the database is away", interval=0.2)
        loop.wait_for(100)  # still answering while the database is away
        assert spill.segments(home / "spill"), "no spill file while the database was unreachable"
        proxy.restore()
        loop.wait_for(60)
        loop.stop()
        answered = loop.ok_ids()
        wait_until(lambda: answered <= set(_logged(url)), 60, "every answered request in the database")
        wait_until(lambda: server.metric("modelyard_prediction_log_pending") == 0, 30, "the spill to drain")
    finally:
        loop.stop()
        server.stop()
    assert not loop.failures, loop.failures[:5]
    assert {a.status for a in loop.answers} == {200}
    logged = _logged(url)
    assert all(logged[rid] == 1 for rid in answered), [rid for rid in answered if logged[rid] != 1][:5]
    assert not spill.segments(home / "spill")
    log = server.log()
    assert "database unreachable" in log and "reachable again" in log


def test_sigterm_while_the_database_is_away_spills_and_the_restart_drains(
    setup: tuple[Path, str, TcpProxy],
) -> None:
    folder, url, proxy = setup
    home = folder / ".modelyard"
    settings = Settings(home=home, database_url=_through(url, proxy))
    server = Server(settings, folder / "sigterm-outage.log", MODELYARD_LOG_FLUSH_INTERVAL="5").wait_ready()
    loop = LoadLoop(f"{server.url}/v1/models/house-prices/predict", {"instances": house_rows(1)}, threads=2)
    try:
        loop.start()
        loop.wait_for(40)
        proxy.cut()
        loop.wait_for(40)
        assert server.stop() in (0, -signal.SIGTERM), server.log()[-2000:]  # uvicorn re-raises SIGTERM
    finally:
        loop.stop()
        with contextlib.suppress(Exception):
            proxy.restore()
    answered = loop.ok_ids()
    assert answered and not answered <= set(_logged(url))  # some records could only go to the spill file
    assert spill.segments(home / "spill")
    restarted = Server(settings, folder / "restart.log").wait_ready()
    try:
        wait_until(lambda: answered <= set(_logged(url)), 60, "the spilled records after the restart")
    finally:
        restarted.stop()
    logged = _logged(url)
    assert all(logged[rid] == 1 for rid in answered)
    assert not spill.segments(home / "spill")

"""``modelyard serve --workers N`` on Linux: each worker listens on a socket of its own (``SO_REUSEPORT``), so
connections a client opens at once are spread over the workers instead of landing on whichever woke first;
an address already taken stops the server with an error instead of a worker restarted forever."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import cli_env
from tests.integration.serving import house_rows
from tests.support.ports import free_port
from tests.support.serving import Server, served_model
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing is Linux's")


def _serve(port: int, env: dict[str, str], timeout: float = 60) -> tuple[int | None, str]:
    """``modelyard serve --workers 2`` on ``port``, expected to stop by itself: (exit code, its output). If it
    is still running after ``timeout`` its whole process group is killed (no worker stays on the port) and
    the code is None."""
    proc = subprocess.Popen([sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def _listening(pid: int, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in psutil.Process(pid).net_connections(kind="tcp"))


def _listening_workers(server: Server, n: int = 2) -> list[psutil.Process]:
    """The server's ``n`` workers, once each listens: /readyz answers as soon as the first one does."""
    supervisor = psutil.Process(server.proc.pid)

    def workers() -> list[psutil.Process]:
        return [p for p in supervisor.children() if _listening(p.pid, server.port)]

    wait_until(lambda: len(workers()) == n, 60, f"{n} workers listening", interval=0.2,
               retry_on=(psutil.NoSuchProcess,))
    return workers()


def _established(pid: int, port: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def test_each_worker_listens_on_its_own_socket_and_a_burst_of_connections_reaches_both(tmp_path: Path) -> None:
    with served_model(tmp_path / "served", workers=2) as server:
        supervisor = psutil.Process(server.proc.pid)
        assert not _listening(supervisor.pid, server.port)  # no socket that nobody accepts from
        workers = [p.pid for p in _listening_workers(server)]

        body = {"instances": house_rows(1)}
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(32)]
        try:
            with ThreadPoolExecutor(32) as pool:  # 32 keep-alive connections opened at once, as wrk does
                statuses = list(pool.map(lambda c: c.post("/v1/models/house-prices/predict", json=body).status_code,
                                         clients))
            assert statuses == [200] * 32
            held = [_established(pid, server.port) for pid in workers]
        finally:
            for client in clients:
                client.close()
        # a second server on the same port would join these workers' sockets and take connections: refused
        code, out = _serve(server.port, cli_env(server.settings))
        assert code == 1 and "Address already in use" in out, out
    # the kernel picks a worker's socket by a hash of each connection's addresses: both get a share (fewer
    # than 4 of 32 on one side has a chance of about 3 in a million)
    assert sum(held) == 32 and min(held) >= 4, held


def test_an_address_already_taken_stops_the_server_with_an_error(tmp_path: Path) -> None:
    from modelyard.config import Settings

    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    try:
        code, out = _serve(port, cli_env(Settings(home=tmp_path / ".modelyard")))
    finally:
        taken.close()
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in out and "Address already in use" in out, out


def _kill_a_stopped_worker_under_a_burst(server: Server, connections: int = 40) -> tuple[list[int], int]:
    """Stop one worker (SIGSTOP), open ``connections`` new connections at once with a request on each,
    then SIGKILL the stopped worker (a crash): the statuses of the requests that got an answer, and how
    many got none (their connection reset). The supervisor starts a new worker."""
    victim = _listening_workers(server)[0]
    body = {"instances": house_rows(1)}

    def post(_: int) -> int | None:
        try:  # a client of its own: a new connection for each request
            return httpx.post(server.url + "/v1/models/house-prices/predict", json=body, timeout=60).status_code
        except httpx.TransportError:
            return None

    victim.suspend()
    try:
        with ThreadPoolExecutor(connections) as pool:
            futures = [pool.submit(post, i) for i in range(connections)]
            # every connection is made (the kernel completes the handshake of a stopped worker's too) and
            # the requests the running worker takes are answered; the rest wait in the stopped one's queue
            wait_until(lambda: sum(f.done() for f in futures) >= connections // 4 or
                       all(f.done() for f in futures), 30, "the running worker to answer")
            time.sleep(1.0)
            victim.kill()
            results = [f.result() for f in futures]
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.resume()
    answered = [r for r in results if r is not None]
    return answered, len(results) - len(answered)


def test_with_a_shared_socket_a_worker_that_crashes_leaves_its_waiting_connections_to_the_other(
        tmp_path: Path) -> None:
    with served_model(tmp_path / "served", workers=2, extra_args=("--shared-socket",)) as server:
        assert _listening(server.proc.pid, server.port)  # uvicorn's one socket, held by the supervisor
        assert "tcp_migrate_req" not in server.log()
        answered, lost = _kill_a_stopped_worker_under_a_burst(server)
    assert lost == 0 and answered == [200] * len(answered), (answered, lost)


def test_with_a_socket_per_worker_a_crashed_workers_waiting_connections_are_lost_unless_the_kernel_moves_them(
        tmp_path: Path) -> None:
    """What the supervisor's warning says: without ``net.ipv4.tcp_migrate_req`` the connections the kernel
    had queued at the crashed worker's own socket are reset; with it they are answered by the other worker."""
    from modelyard.serve.workers import queued_connections_migrate

    migrate = queued_connections_migrate()
    with served_model(tmp_path / "served", workers=2) as server:
        assert ("tcp_migrate_req=1" in server.log()) == (not migrate), server.log()
        answered, lost = _kill_a_stopped_worker_under_a_burst(server)
    assert answered == [200] * len(answered)
    # the kernel spreads 40 new connections over both sockets by a hash: none on the stopped worker's has a
    # chance of one in 2**40
    assert (lost > 0) == (not migrate), (answered, lost, migrate)

"""Helpers for tests that run a real ``modelyard serve`` (uvicorn in a subprocess on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelyard.config import Settings
from tests.conftest import EXAMPLES, PG_ADMIN_URL, cli_env, generate_houses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Server:
    """``python -m modelyard serve`` on a free port; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, settings: Settings, log_path: Path, *, workers: int = 1,
                 extra_args: tuple[str, ...] = (),
                 **env: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port), "--workers", str(workers),
             *extra_args],
            env=cli_env(settings, **env), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_group() reaches every worker
        )

    def wait_ready(self, timeout: float = 90.0) -> Server:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "the server to be ready", interval=0.2)
        return self

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kill_group(self) -> None:
        """SIGKILL the server's whole process group (the supervisor and every worker), as an OOM kill or a
        node failure would: no shutdown code runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)

    def __enter__(self) -> Server:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new empty PostgreSQL database for a whole module; dropped afterwards."""
    import psycopg

    name = f"my_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from modelyard.registry.db import get_engine

        with contextlib.suppress(Exception):
            get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Answer:
    request_id: str
    status: int
    version: int | None
    error: str | None = None


@dataclass
class LoadLoop:
    """Threads that post ``body`` in a loop with unique request ids and remember every answer."""

    url: str
    body: dict[str, Any]
    threads: int = 4
    max_requests: int = 20_000
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # transport errors (no answer at all)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadLoop:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self._stop.is_set() and len(self.answers) < self.max_requests:
                n += 1
                rid = f"load-{worker}-{n}-{uuid.uuid4().hex[:8]}"
                try:
                    r = client.post(self.url, json=self.body, headers={"X-Request-ID": rid})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(f"{rid}: {type(exc).__name__}")
                    if self._stop.is_set():
                        return
                    time.sleep(0.05)
                    continue
                version = None
                error = None
                if r.status_code == 200:
                    version = int(r.json()["model"]["version"])
                else:
                    error = r.text[:300]
                with self._lock:
                    self.answers.append(Answer(rid, r.status_code, version, error))

    def count(self) -> int:
        return len(self.answers)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        target = self.count() + n
        wait_until(lambda: self.count() >= target, timeout, f"{n} more answers")

    def stop(self) -> LoadLoop:
        self._stop.set()
        for t in self._workers:
            t.join(30)
        return self

    def ok_ids(self) -> set[str]:
        return {a.request_id for a in self.answers if a.status == 200}


def house_spec_in(folder: Path, rows: int = 3000, seed: int = 11) -> Path:
    """The house-price example spec on ``rows`` generated rows (30 boosting rounds: quick to train)."""
    folder.mkdir(parents=True, exist_ok=True)
    generate_houses(rows, seed=seed).to_csv(folder / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
    (folder / "spec.toml").write_text(spec)
    return folder / "spec.toml"


def cancer_spec_in(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(EXAMPLES / "breast_cancer" / "generate.py"), "--out",
                    str(folder / "breast_cancer.csv")], check=True, capture_output=True)
    (folder / "spec.toml").write_text((EXAMPLES / "breast_cancer" / "spec.toml").read_text())
    return folder / "spec.toml"


def house_rows(n: int, seed: int = 99) -> list[dict[str, Any]]:
    """Rows as a client would send them: JSON-ready dicts, missing values as None."""
    frame = generate_houses(n, seed=seed).drop(columns="price")
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]

"""Helpers for tests against a real ``modelyard serve`` (the server itself is ``tests.support.Server``):
a fresh PostgreSQL database per module, a load loop, the example specs and rows."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import EXAMPLES, PG_ADMIN_URL, generate_houses
from tests.support import wait_until


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new empty PostgreSQL database for a whole module; dropped afterwards."""
    import psycopg

    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
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

"""A real ``modelyard serve`` (uvicorn in a subprocess on a free port of 127.0.0.1) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from modelyard.config import Settings
from modelyard.monitor.metrics import FLUSH_DELAY
from tests.conftest import EXAMPLES, cli_env, generate_houses, train_and_publish
from tests.support.ports import free_port
from tests.support.waiting import wait_until


class Server:
    """``python -m modelyard serve`` on a free port; ``wait_ready()`` waits for /readyz, ``stop()`` sends
    SIGTERM and waits. As a context manager it does both."""

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
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200

        wait_until(ready, timeout, "the server to be ready", interval=0.2, retry_on=(httpx.HTTPError,))
        return self

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels`` (0 when absent), read once every
        worker's counts are due in the series (``metrics.FLUSH_DELAY`` after the last answer)."""
        time.sleep(2 * FLUSH_DELAY)
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


def house_spec_in(folder: Path, rows: int = 3000, seed: int = 11) -> Path:
    """The house-price example spec on ``rows`` generated rows (30 boosting rounds: quick to train)."""
    folder.mkdir(parents=True, exist_ok=True)
    generate_houses(rows, seed=seed).to_csv(folder / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
    (folder / "spec.toml").write_text(spec)
    return folder / "spec.toml"


@contextlib.contextmanager
def served_model(folder: Path, settings: Settings | None = None, *, spec: Path | None = None,
                 alias: str | None = "production", workers: int = 1, extra_args: tuple[str, ...] = (),
                 **env: str) -> Iterator[Server]:
    """Publish the example model (the house-price spec unless ``spec`` is given) into the registry of
    ``settings`` (a fresh SQLite home under ``folder`` by default) and serve it until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = settings or Settings(home=folder / ".modelyard")
    train_and_publish(spec or house_spec_in(folder / "house"), settings, alias=alias)
    with Server(settings, folder / "server.log", workers=workers, extra_args=extra_args, **env) as server:
        yield server

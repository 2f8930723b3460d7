"""Readiness is a real state on a real server: a production version that fails to load makes ``/readyz`` and
the Open Inference Protocol ready routes say so (503; 400, the protocol's "false"), per model and per
version, until the alias moves to a version that loads."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import tritonclient.http as triton
from sklearn.linear_model import LinearRegression

import modelyard
from modelyard.config import Settings
from modelyard.registry import Registry
from tests.support import Server, wait_until


def _publish(settings: Settings, name: str, alias: str | None) -> int:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = 2 * frame["a"] - frame["b"]
    return modelyard.publish(name, LinearRegression().fit(frame, y), frame, y, alias=alias, settings=settings)


def _corrupt(settings: Settings, name: str, version: int) -> None:
    sha = Registry(settings).get_version(name, version).archive_sha256
    archive = settings.resolved_artifact_root / "sha256" / sha[:2] / f"{sha}.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def test_a_production_version_that_fails_to_load_is_reported_not_ready(sqlite_settings: Settings,
                                                                       tmp_path: Path) -> None:
    _publish(sqlite_settings, "broken", "production")  # v1, corrupted below
    _publish(sqlite_settings, "broken", None)  # v2, sound
    _publish(sqlite_settings, "sound", "production")
    _corrupt(sqlite_settings, "broken", 1)
    server = Server(sqlite_settings, tmp_path / "server.log", MODELYARD_RELOAD_INTERVAL="0.3")
    try:  # not ``with Server(...)``: that waits until /readyz answers 200
        wait_until(lambda: _status(server, "/healthz") == 200, 90, "the server to be live")
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            readyz = httpx.get(f"{server.url}/readyz", timeout=10)
            assert readyz.status_code == 503 and readyz.json()["status"] == "not ready"
            assert "broken@production" in readyz.json()["not_ready"]
            assert list(readyz.json()["not_ready"]) == ["broken@production"]
            health = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
            assert (health.status_code, health.json()) == (400, {"ready": False})
            assert client.is_server_live() and not client.is_server_ready()
            assert not client.is_model_ready("broken")
            assert not client.is_model_ready("broken", "1")
            assert client.is_model_ready("broken", "2")  # a sound version of the same model, by number
            assert client.is_model_ready("sound")
            answer = httpx.get(f"{server.url}/v2/models/broken/ready", timeout=10)
            assert (answer.status_code, answer.json()) == (400, {"name": "broken", "ready": False})
            assert httpx.get(f"{server.url}/v2/models/nothing/ready", timeout=10).status_code == 404

            Registry(sqlite_settings).set_alias("broken", "production", 2)
            wait_until(lambda: _status(server, "/readyz") == 200, 30, "the server to become ready")
            assert client.is_server_ready() and client.is_model_ready("broken")
            assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}
        finally:
            client.close()
    finally:
        server.stop()


def _status(server: Server, path: str) -> int | None:
    try:
        return httpx.get(server.url + path, timeout=2).status_code
    except httpx.HTTPError:
        return None

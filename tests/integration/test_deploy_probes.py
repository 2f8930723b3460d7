"""The generated Deployment's probes and scrape path answer on a real server, started as the image does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd

from modelyard.config import Settings
from modelyard.deploy import K8sOptions, manifests
from tests.conftest import cli_env, run_cli, train_and_publish
from tests.deploy_tools import house_project
from tests.support import free_port, wait_until
from tests.unit.test_deploy_docker import instructions
from tests.unit.test_deploy_k8s import container


def test_probe_paths_of_the_generated_deployment_answer(tmp_path: Path, houses_frame: pd.DataFrame) -> None:
    registry_settings = Settings(home=tmp_path / "registry")
    assert train_and_publish(house_project(tmp_path / "project", houses_frame), registry_settings) == 1
    ctx = tmp_path / "image"
    built = run_cli("deploy", "docker", "house-prices", "--out", str(ctx), settings=registry_settings)
    assert built.returncode == 0, built.stderr
    opts = K8sOptions(model="house-prices", image="modelyard-house-prices:v1")
    deployment = next(d for d in manifests(opts) if d["kind"] == "Deployment")
    server = container(deployment)
    port = free_port()
    args = list(server["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    dockerfile = instructions((ctx / "Dockerfile").read_text())
    entry = json.loads(next(a for i, a in dockerfile if i == "ENTRYPOINT"))
    entry = [str(ctx / "bundle.lock.json") if a == "/opt/modelyard/bundle.lock.json" else a for a in entry]
    container_home = Settings(home=tmp_path / "container-home")  # a fresh container: the start step seeds it
    proc = subprocess.Popen([sys.executable, *entry[1:], *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=cli_env(container_home, PYTHONPATH=str(ctx)))
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"the server exited: {proc.stdout.read() if proc.stdout else ''}"
            try:
                path = server["readinessProbe"]["httpGet"]["path"]
                return httpx.get(base + path, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 120, "the readiness probe to pass")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = server[probe]["httpGet"]["path"]
            assert server[probe]["httpGet"]["port"] == "http"
            assert httpx.get(base + path, timeout=5).status_code == 200, f"{probe} {path}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        metrics = httpx.get(base + annotations["prometheus.io/path"], timeout=5)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        assert httpx.get(base + "/no-such-path", timeout=5).status_code == 404  # not a catch-all server
        health = json.loads(next(a for i, a in dockerfile if i == "HEALTHCHECK").split("CMD", 1)[1])
        health = [a.replace(":8000/", f":{port}/") for a in health]
        assert health[0] == "python"
        # what docker runs as the image's HEALTHCHECK
        assert subprocess.run([sys.executable, *health[1:]], timeout=30).returncode == 0
        proc.send_signal(signal.SIGTERM)  # the image's STOPSIGNAL; the pod gets the same after preStop
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop as well as 0
        assert proc.wait(timeout=grace) in (0, -signal.SIGTERM), "no clean stop within the grace period"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()

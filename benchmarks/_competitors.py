"""The servers a benchmark compares: modelyard, ``mlflow models serve`` and a BentoML service, each started as
a separate process group on 127.0.0.1 with a given number of workers.

MLflow and BentoML are never dependencies of modelyard: they live in the benchmark's own virtualenv
(``.bench-venv/`` at the repository root, git-ignored), created on first use with
``pip install mlflow bentoml`` and the same scikit-learn, numpy, pandas, scipy and joblib versions as the
running interpreter (so the pickled pipeline loads there unchanged), and reused afterwards.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".bench-venv"
PINNED = ("scikit-learn", "numpy", "pandas", "scipy", "joblib")
FRAMEWORKS = {"mlflow": "mlflow", "bentoml": "bentoml"}  # benchmark name -> PyPI package (and module)

SAVE_MLFLOW = r"""
import sys, joblib, pandas as pd, mlflow.sklearn
from mlflow.models import infer_signature
pipeline = joblib.load(sys.argv[1])
sample = pd.read_json(sys.argv[2], orient="records")
mlflow.sklearn.save_model(pipeline, sys.argv[3], signature=infer_signature(sample, pipeline.predict(sample)),
                          pip_requirements=["scikit-learn"], serialization_format="cloudpickle")
"""

BENTO_SERVICE = '''
"""The house-price pipeline as a BentoML service: {workers} workers, adaptive batching (as BentoML recommends).

The input is a list of records: with ``pd.DataFrame`` as the batchable input type, BentoML 1.4.40's
dispatcher crashes (``PandasDataFrameContainer.get_batch_size`` returns a shape tuple) and every request
times out.
"""
import os
from typing import Any

import bentoml
import joblib
import pandas as pd


@bentoml.service(workers={workers}, traffic={{"timeout": 120}})
class HousePrices:
    def __init__(self) -> None:
        self.pipeline = joblib.load(os.environ["BENCH_MODEL_PATH"])

    @bentoml.api(batchable=True, max_batch_size={max_batch}, max_latency_ms=60000)
    def predict(self, instances: list[dict[str, Any]]) -> list[float]:
        return self.pipeline.predict(pd.DataFrame.from_records(instances)).tolist()
'''


def bench_python(frameworks: Sequence[str]) -> tuple[Path | None, dict[str, str]]:
    """The benchmark venv's python with ``frameworks`` importable, and why any of them is not."""
    python = BENCH_VENV / "bin" / "python"
    problems: dict[str, str] = {}
    if not python.exists():
        print(f"creating the benchmark's own virtualenv {BENCH_VENV} ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], capture_output=True, text=True)
        if done.returncode != 0:
            return None, {f: f"could not create {BENCH_VENV}: {done.stderr.strip()[-300:]}" for f in frameworks}
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in PINNED]
    for name in frameworks:
        if _imports(python, name):
            continue
        print(f"installing {FRAMEWORKS[name]} into {BENCH_VENV} (once) ...", flush=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", FRAMEWORKS[name], *pins],
                              capture_output=True, text=True)
        if done.returncode != 0 or not _imports(python, name):
            problems[name] = "pip install failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:300]
    return python, problems


def _imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def package_version(python: Path, package: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _venv_env(python: Path, threads: int | None) -> dict[str, str]:
    """The environment with the benchmark venv first on PATH (MLflow runs ``uvicorn`` by name) and, with
    ``threads``, native thread pools held to that many threads per worker, as modelyard's workers are."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = str(python.parent) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def _threads_note(threads: int | None) -> str:
    return f", OMP_NUM_THREADS={threads}" if threads is not None else ", native threads as they come"


class Server:
    """A server process group: started at once, ``wait_ready()`` polls its health URL, ``stop()`` ends it."""

    def __init__(self, name: str, command: list[str], *, url: str, ready: str, env: dict[str, str],
                 cwd: Path, logfile: Path, body_key: str | None, note: str = "") -> None:
        self.name, self.url, self.ready_url, self.body_key, self.note = name, url, ready, body_key, note
        self.logfile = logfile
        self._log = open(logfile, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> Server:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.logfile.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.name} did not start (see {self.logfile}):\n{tail}")
            time.sleep(0.3)

    def body(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {self.body_key or "instances": rows}

    def predictions(self, answer: Any) -> list[float]:
        return list(answer["predictions"] if isinstance(answer, dict) else answer)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started: the server and its workers
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def modelyard_server(home: Path, port: int, workers: int, workdir: Path, *, log: bool = True,
                     database_url: str | None = None, durability: str | None = None,
                     settings: dict[str, str] | None = None, src: Path | None = None) -> Server:
    """``modelyard serve`` of this tree (or of the ``src`` folder of another checkout, for a before/after);
    ``settings``: more ``MODELYARD_*`` variables for the server (e.g. ``{"MODELYARD_LOG_TARGET": "parquet"}``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(settings or {})
    env["PYTHONPATH"] = str(src or ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["MODELYARD_HOME"] = str(home)
    env["MODELYARD_PREDICTION_LOG"] = "true" if log else "false"
    if database_url:
        env["MODELYARD_DATABASE_URL"] = database_url
    if durability:
        env["MODELYARD_LOG_DURABILITY"] = durability
    base = f"http://127.0.0.1:{port}"
    return Server("modelyard", [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers",
                                str(workers)],
                  url=f"{base}/v1/models/house-prices/predict", ready=f"{base}/readyz", env=env, cwd=workdir,
                  logfile=workdir / f"modelyard-{port}.log", body_key="instances",
                  note=f"ONNX fast path, micro-batching, prediction log {'on' if log else 'off'} "
                       f"({'PostgreSQL' if database_url else 'SQLite'})")


FLOOR_APP = '''"""The floor: a bare Starlette endpoint that parses the JSON body and returns a constant."""
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ANSWER = orjson.dumps({"predictions": [0.0], "model": {"name": "floor", "version": 1}, "request_id": "-"})


async def predict(request):
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


async def ready(request):
    return Response(b"ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
'''


FLOOR_OWN_SOCKETS = """import sys
import uvicorn
from modelyard.serve.workers import run_workers
run_workers(uvicorn.Config("floor_app:app", host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]),
                           access_log=False, log_level="warning"))
"""


def floor_server(port: int, workers: int, workdir: Path, *, one_write: bool = False,
                 own_sockets: bool = False) -> Server:
    """The HTTP floor of this machine: the same uvicorn (httptools, uvloop), a Starlette route that parses
    the body with orjson and answers a constant, ``workers`` processes. ``one_write``: under modelyard's
    HTTP protocol (``serve/wire.py``: each response in one socket write), to show what that protocol alone
    is worth; ``own_sockets``: each worker on a socket of its own, as ``modelyard serve`` runs them
    (``serve/workers.py``), to show what that alone is worth."""
    folder = workdir / "floor"
    folder.mkdir(exist_ok=True)
    (folder / "floor_app.py").write_text(FLOOR_APP)
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "floor_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    env = dict(os.environ)
    if one_write or own_sockets:
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + str(folder) + os.pathsep + env.get("PYTHONPATH", "")
    if one_write:
        command += ["--http", "modelyard.serve.wire:OneWriteHttp"]
    if own_sockets:
        command = [sys.executable, "-c", FLOOR_OWN_SOCKETS, str(port), str(workers)]
    name = "floor-1w" if one_write else "floor-rp" if own_sockets else "floor"
    how = " (one write a response)" if one_write else " (a socket per worker)" if own_sockets else ""
    return Server(name, command, url=f"{base}/predict", ready=f"{base}/readyz", env=env,
                  cwd=folder, logfile=workdir / f"{name}-{port}.log", body_key="instances",
                  note=f"bare Starlette + orjson under uvicorn{how}, {workers} workers")


def mlflow_server(python: Path, model_file: Path, sample: Path, port: int, workers: int,
                  workdir: Path, threads: int | None = 1) -> Server:
    model_dir = workdir / "mlflow-model"
    if not model_dir.exists():
        done = subprocess.run([str(python), "-c", SAVE_MLFLOW, str(model_file), str(sample), str(model_dir)],
                              capture_output=True, text=True, cwd=workdir)
        if done.returncode != 0:
            raise RuntimeError(f"saving the MLflow model failed: {done.stderr.strip()[-1500:]}")
    env = {**_venv_env(python, threads), "MLFLOW_TRACKING_URI": (workdir / "mlruns").as_uri()}
    base = f"http://127.0.0.1:{port}"
    command = [str(python.parent / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "-w", str(workers), "-h", "127.0.0.1", "-p", str(port)]
    return Server("MLflow", command, url=f"{base}/invocations", ready=f"{base}/ping", env=env, cwd=workdir,
                  logfile=workdir / "mlflow.log", body_key="dataframe_records",
                  note=f"mlflow {package_version(python, 'mlflow')} models serve --env-manager local -w {workers}"
                       + _threads_note(threads))


def bentoml_server(python: Path, model_file: Path, port: int, workers: int, workdir: Path,
                   max_batch: int, threads: int | None = 1) -> Server:
    folder = workdir / "bento"
    folder.mkdir(exist_ok=True)
    (folder / "service.py").write_text(BENTO_SERVICE.format(workers=workers, max_batch=max_batch))
    env = {**_venv_env(python, threads), "BENCH_MODEL_PATH": str(model_file),
           "BENTOML_HOME": str(workdir / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "True"}
    base = f"http://127.0.0.1:{port}"
    command = [str(python.parent / "bentoml"), "serve", "service:HousePrices", "--host", "127.0.0.1", "--port",
               str(port)]
    return Server("BentoML", command, url=f"{base}/predict", ready=f"{base}/readyz", env=env, cwd=folder,
                  logfile=workdir / "bentoml.log", body_key="instances",
                  note=f"bentoml {package_version(python, 'bentoml')}, {workers} workers, list-of-records input, "
                       f"adaptive batching (max_batch_size {max_batch})" + _threads_note(threads))

"""``benchmarks/serve.py --compare mlserver``: the same pipeline behind MLServer (+ mlserver-sklearn) and
modelyard, over the Open Inference Protocol three ways: V2 REST JSON, V2 REST binary tensors and V2 gRPC.

Both servers run at once on 127.0.0.1 with 2 workers each (MLServer: ``parallel_workers``; modelyard:
uvicorn workers, each binding the gRPC port with SO_REUSEPORT), idle except while measured; each cell
measures both, in an order that alternates from cell to cell. The requests are built once per server and
transport (one tensor per column; MLServer's are marked ``content_type: pd``, its BYTES inputs ``str``, as its
pandas codec wants) and replayed by a load generator in its own process: an async httpx client for REST,
a ``grpc.aio`` client for gRPC (8 channels at most, so that connections spread over the workers) that sends
the serialized ``ModelInferRequest`` as it is. MLServer lives in the benchmark's own virtualenv
(``.bench-venv/``), never in modelyard's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _compare import request_rows
from _competitors import BENCH_VENV, PINNED, ROOT, Server, _imports, _venv_env, package_version
from _loadgen import free_port

MODEL = "house-prices"
TRANSPORTS = ("json", "binary", "grpc")
CELLS = ((1, 1), (1, 32), (1000, 1), (1000, 4))  # rows per request, concurrency
INSTALL = ["mlserver", "mlserver-sklearn", "uvloop<0.22"]  # uvloop 0.22+: MLServer's workers die at start

LOADGEN = r"""
import asyncio, json, sys, time
spec = json.loads(sys.argv[1])
body = open(spec["body"], "rb").read()
concurrency, duration = spec["concurrency"], spec["duration"]
latencies, errors = [], 0

async def run_http():
    import httpx
    global errors
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker(stop_at):
            global errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    r = await client.post(spec["url"], content=body, headers=spec["headers"])
                    ok = r.status_code < 300
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + duration) for _ in range(concurrency)))
        return time.perf_counter() - start

async def run_grpc():
    import grpc
    channels = [grpc.aio.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(min(concurrency, 8))]
    calls = [ch.unary_unary("/inference.GRPCInferenceService/ModelInfer") for ch in channels]
    async def worker(i, stop_at):
        global errors
        call = calls[i % len(calls)]
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call(body, timeout=60)
                ok = True
            except grpc.aio.AioRpcError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok
    start = time.perf_counter()
    await asyncio.gather(*(worker(i, start + duration) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    return elapsed

elapsed = asyncio.run(run_grpc() if spec["mode"] == "grpc" else run_http())
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
print(json.dumps({"requests": len(latencies), "rps": len(latencies) / elapsed, "p50": q(0.5), "p99": q(0.99),
                  "errors": errors}))
"""


def mlserver_python() -> tuple[Path | None, str | None]:
    """The benchmark venv's python with MLServer importable (installed once), or why not."""
    import importlib.metadata

    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        done = subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"could not create {BENCH_VENV}: {done.stderr.strip()[-300:]}"
    if not (_imports(python, "mlserver") and _imports(python, "mlserver_sklearn")):
        print(f"installing MLServer into {BENCH_VENV} (once) ...", flush=True)
        pins = [f"{p}=={importlib.metadata.version(p)}" for p in PINNED]
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *INSTALL, *pins], capture_output=True,
                              text=True)
        if done.returncode != 0 or not _imports(python, "mlserver_sklearn"):
            return None, "pip install failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:300]
    return python, None


def mlserver_server(python: Path, model_file: Path, port: int, grpc_port: int, workers: int,
                    workdir: Path) -> Server:
    folder = workdir / "mlserver"
    (folder / MODEL).mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": free_port(),
        "parallel_workers": workers}))
    (folder / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": str(model_file)}}))
    env = _venv_env(python, 1)
    base = f"http://127.0.0.1:{port}"
    return Server("MLServer", [str(python.parent / "mlserver"), "start", str(folder)],
                  url=f"{base}/v2/models/{MODEL}/infer", ready=f"{base}/v2/models/{MODEL}/ready", env=env,
                  cwd=workdir, logfile=workdir / "mlserver.log", body_key=None,
                  note=f"mlserver {package_version(python, 'mlserver')} + mlserver-sklearn, parallel_workers "
                       f"{workers}, OMP_NUM_THREADS=1")


# ---- requests --------------------------------------------------------------------------------------------
def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    names = list(rows[0])
    out = []
    for name in names:
        values = [r[name] for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out.append((name, "FP64" if numeric else "BYTES", [float(v) for v in values] if numeric else values))
    return out


def _strings(values: list[Any]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))


def _raw(datatype: str, values: list[Any]) -> bytes:
    return _strings(values) if datatype == "BYTES" else np.asarray(values, dtype="<f8").tobytes()


def rest_body(rows: list[dict[str, Any]], *, binary: bool, mlserver: bool) -> tuple[bytes, dict[str, str]]:
    inputs, chunks = [], []
    for name, datatype, values in _columns(rows):
        tensor: dict[str, Any] = {"name": name, "shape": [len(rows)], "datatype": datatype}
        params: dict[str, Any] = {"content_type": "str"} if mlserver and datatype == "BYTES" else {}
        if binary:
            chunk = _raw(datatype, values)
            chunks.append(chunk)
            params["binary_data_size"] = len(chunk)
        else:
            tensor["data"] = values
        if params:
            tensor["parameters"] = params
        inputs.append(tensor)
    header: dict[str, Any] = {"inputs": inputs}
    if mlserver:
        header["parameters"] = {"content_type": "pd"}
    if binary:
        header.setdefault("parameters", {})["binary_data_output"] = True
        head = json.dumps(header).encode()
        return head + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                         "Inference-Header-Content-Length": str(len(head))}
    return json.dumps(header).encode(), {"Content-Type": "application/json"}


def grpc_body(rows: list[dict[str, Any]], *, mlserver: bool) -> bytes:
    """A serialized ``ModelInferRequest`` (modelyard's messages: the protocol's wire format)."""
    from modelyard.serve.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    if mlserver:
        request.parameters["content_type"].string_param = "pd"
    for name, datatype, values in _columns(rows):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        if mlserver and datatype == "BYTES":
            tensor.parameters["content_type"].string_param = "str"
        request.raw_input_contents.append(_raw(datatype, values))
    return request.SerializeToString()


def decode_grpc(data: bytes) -> list[float]:
    from modelyard.serve.grpc import inference_pb2 as pb

    response = pb.ModelInferResponse.FromString(data)
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype="<f8").tolist()
    return list(response.outputs[0].contents.fp64_contents)


def decode_rest(data: bytes, headers: httpx.Headers) -> list[float]:
    n = int(headers.get("inference-header-content-length", len(data)))
    header = json.loads(data[:n])
    out = header["outputs"][0]
    if "data" in out:
        return [float(v) for v in out["data"]]
    return np.frombuffer(data[n:n + out["parameters"]["binary_data_size"]], dtype="<f8").tolist()


# ---- one run ---------------------------------------------------------------------------------------------
class Target:
    """One server over one transport: its request bodies and how to send and check one."""

    def __init__(self, server: Server, transport: str, grpc_port: int, workdir: Path) -> None:
        self.server, self.transport, self.grpc_port, self.workdir = server, transport, grpc_port, workdir
        self.bodies: dict[int, tuple[Path, dict[str, str]]] = {}

    @property
    def name(self) -> str:
        return self.server.name

    def prepare(self, rows: list[dict[str, Any]]) -> None:
        mlserver = self.name == "MLServer"
        for n in sorted({n for n, _ in CELLS}):
            path = self.workdir / f"{self.name}-{self.transport}-{n}.body"
            if self.transport == "grpc":
                path.write_bytes(grpc_body(rows[:n], mlserver=mlserver))
                self.bodies[n] = (path, {})
            else:
                data, headers = rest_body(rows[:n], binary=self.transport == "binary", mlserver=mlserver)
                path.write_bytes(data)
                self.bodies[n] = (path, headers)

    def answer(self, n: int) -> list[float]:
        path, headers = self.bodies[n]
        if self.transport == "grpc":
            import grpc

            with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
                return decode_grpc(call(path.read_bytes(), timeout=120))
        r = httpx.post(self.url, content=path.read_bytes(), headers=headers, timeout=120)
        r.raise_for_status()
        return decode_rest(r.content, r.headers)

    @property
    def url(self) -> str:
        return self.server.url

    def measure(self, n: int, concurrency: int, duration: float) -> dict[str, Any]:
        path, headers = self.bodies[n]
        spec = {"mode": "grpc" if self.transport == "grpc" else "http", "url": self.url, "headers": headers,
                "target": f"127.0.0.1:{self.grpc_port}", "body": str(path), "concurrency": concurrency,
                "duration": duration}
        out = subprocess.run([sys.executable, "-c", LOADGEN, json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-800:])
        return dict(json.loads(out.stdout))


def compare_mlserver(args: argparse.Namespace, prepare: Callable[..., Path]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-oip-"))
    home = tmp / ".modelyard"
    servers: list[Server] = []
    try:
        print(f"training the house-price pipeline (100 trees) on {args.rows} rows ...", flush=True)
        model_file = prepare(home, None, args.rows)
        import modelyard
        from modelyard.config import Settings

        model = modelyard.load(MODEL, settings=Settings(home=home))
        rows = [r for r in request_rows(3000) if all(v is not None for v in r.values())][:1000]
        expected = model.pipeline_.predict(model.schema.validate_rows(rows))
        python, problem = mlserver_python()
        grpc_ports = {"modelyard": free_port(), "MLServer": free_port()}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        me = Server("modelyard", [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers",
                                  str(args.workers), "--grpc-port", str(grpc_ports["modelyard"])],
                    url=f"{base}/v2/models/{MODEL}/infer", ready=f"{base}/readyz", env=_modelyard_env(home),
                    cwd=tmp, logfile=tmp / "modelyard.log", body_key=None,
                    note=f"{args.workers} uvicorn workers, gRPC on the same workers (SO_REUSEPORT), ONNX fast "
                         "path, micro-batching, prediction log on (SQLite)")
        servers.append(me)
        if python is not None:
            servers.append(mlserver_server(python, model_file, free_port(), grpc_ports["MLServer"], args.workers,
                                           tmp))
        ready = []
        for s in servers:
            try:
                ready.append(s.wait_ready())
            except RuntimeError as exc:
                if s.name == "modelyard":
                    raise
                problem = str(exc)[-600:]
        targets = {(s.name, t): Target(s, t, grpc_ports[s.name], tmp) for s in ready for t in TRANSPORTS}
        results: dict[tuple[str, str, int, int], dict[str, Any] | str] = {}
        diffs: dict[tuple[str, str], float | str] = {}
        for key, target in targets.items():
            target.prepare(rows)
            try:
                got = target.answer(1000)
                diffs[key] = float(np.max(np.abs(np.asarray(got) - expected)))
                target.measure(1, 1, 1.0)  # warm-up
            except Exception as exc:
                log = target.server.logfile.read_text(errors="replace").strip().splitlines()
                last = next((line for line in reversed(log) if "Error" in line or "error" in line), "")
                diffs[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}; its log: {last[:300]}"
        for i, (n, c) in enumerate(CELLS):
            for transport in TRANSPORTS:
                order = [s.name for s in ready][::1 if i % 2 == 0 else -1]
                for name in order:
                    key = (name, transport)
                    if isinstance(diffs.get(key), str):
                        results[(name, transport, n, c)] = "not measured"
                        continue
                    r = targets[key].measure(n, c, args.duration)
                    results[(name, transport, n, c)] = r
                    print(f"  {name:<9} {transport:<6} {n:>4} row(s) c={c:<3} {r['rps']:8.1f} req/s "
                          f"{r['rps'] * n:10,.0f} rows/s  p50 {r['p50']:7.2f} ms  errors {r['errors']}", flush=True)
        report(args, [s.name for s in ready], {s.name: s.note for s in ready}, problem, diffs, results)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _modelyard_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["MODELYARD_HOME"] = str(home)
    return env


def report(args: argparse.Namespace, names: list[str], notes: dict[str, str], problem: str | None,
           diffs: dict[tuple[str, str], float | str], results: dict[tuple[str, str, int, int], Any]) -> None:
    print(f"\nSame pipeline, {args.workers} workers each, {args.duration:.0f} s per cell, one run (load average "
          f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores shared with others)")
    for name in names:
        print(f"  {name}: {notes[name]}")
        for t in TRANSPORTS:
            d = diffs[(name, t)]
            print(f"    {t}: " + (f"max |answer - in-process scikit-learn| {d:.3g}" if isinstance(d, float)
                                   else f"NOT measured: {d}"))
    if problem:
        print(f"  MLServer problem: {problem}")
    print("\n| transport | request | conc | server | req/s | rows/s | p50 ms | p99 ms | errors |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for t in TRANSPORTS:
        for n, c in CELLS:
            for name in names:
                r = results.get((name, t, n, c))
                if not isinstance(r, dict):
                    print(f"| {t} | {n} | {c} | {name} | not measured | | | | |")
                    continue
                print(f"| {t} | {n} | {c} | {name} | {r['rps']:.1f} | {r['rps'] * n:,.0f} | {r['p50']:.2f} | "
                      f"{r['p99']:.2f} | {r['errors']} |")
    if "MLServer" not in names:
        return
    print("\nmodelyard / MLServer (goal: >= 10x on 1-row requests; 1000 rows: >= 3x binary and gRPC, >= 1.5x JSON)")
    for t in TRANSPORTS:
        for n, c in CELLS:
            me, other = results.get(("modelyard", t, n, c)), results.get(("MLServer", t, n, c))
            if isinstance(me, dict) and isinstance(other, dict) and other["rps"] > 0:
                ratio = me["rps"] / other["rps"]
                goal = 10.0 if n == 1 else (1.5 if t == "json" else 3.0)
                print(f"  {t:<6} {n:>4} row(s) c={c:<3} {ratio:7.2f}x  {'met' if ratio >= goal else 'NOT met'}")
            else:
                print(f"  {t:<6} {n:>4} row(s) c={c:<3} not measured")

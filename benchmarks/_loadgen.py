"""The load generator the serving benchmarks share: ``wrk`` when installed, otherwise an async httpx client in
a separate process. Either way it runs outside the server's processes and reports requests, req/s, p50 and
p99 (ms) and the number of failed requests (non-2xx answers, socket errors and timeouts)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ASYNC_CLIENT = r"""
import asyncio, json, sys, time
import httpx
url, path, concurrency, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = open(path, "rb").read()
latencies, errors = [], 0
async def worker(client, stop_at):
    global errors
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
            ok = r.status_code < 300
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - t0)
        errors += not ok
async def main():
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, start + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / elapsed, "p50": q(0.5),
                      "p99": q(0.99), "errors": errors}))
asyncio.run(main())
"""

WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_client(choice: str = "auto") -> str:
    if choice != "auto":
        return choice
    return "wrk" if shutil.which("wrk") else "async"


def write_body(workdir: Path, name: str, body: Any) -> Path:
    path = workdir / f"{name}.json"
    path.write_bytes(json.dumps(body).encode())
    return path


def run_wrk(url: str, body: Path, concurrency: int, duration: float) -> dict[str, Any]:
    script = body.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(path=body))
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
               "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            return float("nan")
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    def count(pattern: str) -> int:
        found = re.search(pattern, out)
        return sum(int(n) for n in found.groups()) if found else 0

    requests = count(r"(\d+) requests in")
    errors = count(r"Non-2xx or 3xx responses: (\d+)") + count(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"requests": requests, "rps": float(rps.group(1)) if rps else 0.0, "p50": ms("50%"),
            "p99": ms("99%"), "errors": errors}


def run_async(url: str, body: Path, concurrency: int, duration: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", ASYNC_CLIENT, url, str(body), str(concurrency), str(duration)],
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def cpu_jiffies() -> tuple[int, int]:
    """(steal, total) clock ticks of every CPU since boot, from ``/proc/stat``; (0, 0) where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_since(before: tuple[int, int]) -> float:
    """The share of the machine's CPU time its hypervisor took since ``before`` (a ``cpu_jiffies()``)."""
    steal, total = cpu_jiffies()
    return (steal - before[0]) / max(1, total - before[1])


def measure(client: str, url: str, body: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """One load run; ``steal``: the share of the machine's CPU time its hypervisor took meanwhile (a
    virtual machine on a busy host: figures taken under much steal are slower and noisier)."""
    before = cpu_jiffies()
    r = run_wrk(url, body, concurrency, duration) if client == "wrk" else run_async(url, body, concurrency, duration)
    r["steal"] = steal_since(before)
    return r

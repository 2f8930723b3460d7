"""Shared by the monitor tests: a real webhook receiver on 127.0.0.1, logged traffic from a real model, and
a server's dashboard loaded in headless Chromium."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard import load
from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.registry import Registry
from tests.support import wait_until


class Receiver:
    """Collects every JSON body POSTed to it; ``fail_next`` answers that many requests with 503 first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0
        self.lock = threading.Lock()
        self.url = ""

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> None:
        def holds() -> bool:
            with self.lock:
                return predicate(list(self.bodies))

        try:
            wait_until(holds, timeout, "the receiver to get what was expected", interval=0.02)
        except AssertionError:
            raise AssertionError(f"the receiver did not get what was expected; it got {self.bodies}") from None


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.attempts += 1
                failing = receiver.fail_next > 0
                receiver.fail_next -= failing
                if not failing:
                    receiver.bodies.append(json.loads(body))
            self.send_response(503 if failing else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: NaN becomes null, numpy scalars become plain numbers."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in clean.to_dict("records")
    ]


def log_traffic(
    settings: Settings,
    ref: str,
    frame: pd.DataFrame,
    ts: datetime,
    *,
    per_request: int = 10,
    route: str = "primary",
    latency_ms: float = 4.0,
) -> int:
    """Predict ``frame`` with the published model, log it as the server does; return the version."""
    model = load(ref, settings=settings)
    features = frame.drop(columns=[c for c in ("price", "target") if c in frame.columns])
    predictions = model.predict(features)
    rows = json_rows(features)
    records = []
    for start in range(0, len(rows), per_request):
        outs = predictions[start : start + per_request]
        records.append(
            PredictionRecord(
                request_id=uuid.uuid4().hex,
                model=model.name,
                version=int(model.version or 0),
                route=route,
                inputs=rows[start : start + per_request],
                outputs=[v.item() if hasattr(v, "item") else v for v in outs],
                n_rows=len(outs),
                latency_ms=latency_ms,
                ts=ts,
            )
        )
    insert_records(Registry(settings).engine, records)
    return int(model.version or 0)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def dashboard_page(url: str) -> Iterator[Any]:
    """``url``/dashboard loaded and drawn in Debian's headless Chromium (playwright drives it); a script
    error on the page fails the test once the block ends."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    assert CHROMIUM.exists(), "Debian's chromium is missing: apt-get install -y chromium (see .ci/run)"
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/dashboard")
            page.wait_for_function("document.body.dataset.ready !== undefined", timeout=30_000)
            assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#error")
            yield page
        finally:
            browser.close()
    assert errors == []

"""The /dashboard page renders in headless Chromium with data from a published model and logged traffic."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from modelyard.config import Settings
from modelyard.monitor.dashboard import dashboard_data, dashboard_html, static_dir
from modelyard.monitor.scheduler import MonitorScheduler
from modelyard.predlog import PredictionRecord, insert_records, list_records
from modelyard.registry import Registry
from tests.conftest import ROOT, generate_houses, train_and_publish
from tests.integration.monitor_helpers import log_traffic

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dashboard_site(sqlite_settings: Settings, house_spec: Path) -> Iterator[str]:
    """A published model with production v1, canary v2 at 20%, an hour of traffic and a recorded alert;
    its dashboard served by uvicorn the way the server will (page, JSON data, static assets)."""
    registry = Registry(sqlite_settings)
    train_and_publish(house_spec, sqlite_settings)
    v2 = train_and_publish(house_spec, sqlite_settings, alias=None)
    registry.set_alias("house-prices", "canary", v2, weight=0.2, reason="try v2 on a fifth of traffic")
    now = datetime.now(UTC)
    for i, minutes_ago in enumerate(range(55, 0, -5)):  # steady primary traffic, slower towards the end
        log_traffic(sqlite_settings, "house-prices@production", generate_houses(60, seed=40 + i), now -
                    timedelta(minutes=minutes_ago), latency_ms=3.0 + i)
    log_traffic(sqlite_settings, "house-prices@canary", generate_houses(400, seed=60, shift=0.7),
                now - timedelta(minutes=20), route="canary", latency_ms=9.0)
    insert_records(registry.engine, [PredictionRecord(request_id=f"bad-{i}", model="house-prices", version=1,
                                                      error="schema_error: missing column", latency_ms=1.0,
                                                      ts=now - timedelta(minutes=12)) for i in range(5)])

    def records(model: str, since: datetime, until: datetime) -> list[Any]:
        return list_records(registry.engine, model, since=since, until=until, limit=None)

    run = MonitorScheduler(registry, records).run_once()
    assert any(tr.alert["version"] == v2 for tr in run.transitions)  # the shifted canary drifts

    async def page(_: Request) -> HTMLResponse:
        return HTMLResponse(dashboard_html("/dashboard/data", "/dashboard/static"))

    async def data(_: Request) -> JSONResponse:
        return JSONResponse(dashboard_data(registry, registry.engine, records=records))

    app = Starlette(routes=[Route("/dashboard", page), Route("/dashboard/data", data),
                            Mount("/dashboard/static", StaticFiles(directory=static_dir()))])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_dashboard_renders_charts_in_headless_chromium(dashboard_site: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    assert CHROMIUM.exists(), "Debian's chromium is missing: apt-get install -y chromium (see .ci/run)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dashboard_site + "/dashboard")
            page.wait_for_function("document.body.dataset.ready !== undefined", timeout=30_000)
            assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#error")
            page.screenshot(path=str(shot), full_page=True)
            charts = page.evaluate("""() => Object.entries(window.modelyardCharts).map(([id, c]) => {
                const canvas = c.canvas, ctx = canvas.getContext('2d');
                const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                let inked = 0;
                for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
                return {id, type: c.config.type, inked, width: canvas.width,
                        points: c.data.datasets.reduce((n, d) => n + d.data.filter(v => v != null &&
                                (typeof v !== 'object' || v.y != null)).length, 0)};
            })""")
            text = page.inner_text("main")
        finally:
            browser.close()
    assert errors == []
    by_id = {c["id"].split("-")[0]: c for c in charts}
    assert set(by_id) == {"split", "rate", "latency", "errors", "drift"}
    for c in charts:  # every chart has data and has drawn pixels on its canvas
        assert c["width"] > 100 and c["points"] > 0 and c["inked"] > 500, c
    assert "production → v1" in text and "canary → v2 (20%)" in text
    assert "input 'area_sqm' drifted" in text  # the recorded alert is listed
    assert "alias_set canary: v2" in text and "try v2 on a fifth of traffic" in text
    assert shot.stat().st_size > 20_000


def test_dashboard_html_inlines_scripts_when_no_static_url() -> None:
    html = dashboard_html("/x/data")
    assert 'data-url="/x/data"' in html and "Chart.js v4" in html and "modelyardCharts" in html
    assert "<script src=" not in html

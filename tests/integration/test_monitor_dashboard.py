"""``/dashboard`` of a real ``modelyard serve`` renders in headless Chromium with data from the served model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from modelyard.config import Settings
from modelyard.monitor.alert_state import AlertBook
from modelyard.monitor.dashboard import dashboard_html
from modelyard.monitor.scheduler import LEASE
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.registry import Registry
from modelyard.registry.lease import SqlLease
from tests.conftest import ROOT, generate_houses, train_and_publish
from tests.integration.monitor_helpers import dashboard_page, json_rows, log_traffic, webhook_receiver
from tests.support import Server, wait_until

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def dashboard_site(sqlite_settings: Settings, house_spec: Path, tmp_path: Path) -> Iterator[str]:
    """A published model with production v1 and canary v2 at 20%, an hour of logged traffic (the history a
    chart needs), then a real server: its monitor records the canary's drift alert at start, and live
    requests to both versions go through it."""
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
    with Server(sqlite_settings, tmp_path / "server.log", MODELYARD_LOG_FLUSH_INTERVAL="0.1") as server:
        book = AlertBook(registry.engine)
        wait_until(lambda: any(a["version"] == v2 for a in book.firing("house-prices")), 60,
                   "the server's monitor to record the shifted canary's drift alert")
        with httpx.Client(timeout=30) as client:
            for i, ref in enumerate(["house-prices"] * 8 + ["house-prices@canary"] * 2):
                rows = json_rows(generate_houses(5, seed=300 + i).drop(columns=["price"]))
                r = client.post(f"{server.url}/v1/models/{ref}/predict", json={"instances": rows})
                assert r.status_code == 200, r.text

        def live_requests() -> int:
            data = httpx.get(server.url + "/dashboard/data", timeout=30).json()
            return int(data["models"][0]["totals"]["requests"])

        logged = 11 * 6 + 40 + 5  # records of the logged hour: 60-row days in 10-row requests, canary, errors
        wait_until(lambda: live_requests() == logged + 10, 30, "the live requests in the dashboard's data")
        yield server.url


def test_dashboard_renders_charts_in_headless_chromium(dashboard_site: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    with dashboard_page(dashboard_site) as page:
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
        quality_empty = page.evaluate(
            "() => document.querySelector('[id^=\"quality-\"]').parentElement.dataset.empty")
    by_id = {c["id"].split("-")[0]: c for c in charts}
    assert set(by_id) == {"split", "rate", "latency", "errors", "drift", "quality"}
    assert by_id["quality"]["points"] == 0  # no outcomes were posted: the panel says so
    assert quality_empty == "no outcomes in the window"
    for c in charts:  # every other chart has data and has drawn pixels on its canvas
        if c is not by_id["quality"]:
            assert c["width"] > 100 and c["points"] > 0 and c["inked"] > 500, c
    assert "production → v1" in text and "canary → v2 (20%)" in text
    assert "input 'area_sqm' drifted" in text  # the recorded alert is listed
    assert "alias_set canary: v2" in text and "try v2 on a fifth of traffic" in text
    assert shot.stat().st_size > 20_000


def test_dashboard_html_inlines_scripts_when_no_static_url() -> None:
    html = dashboard_html("/x/data")
    assert 'data-url="/x/data"' in html and "Chart.js v4" in html and "modelyardCharts" in html
    assert "<script src=" not in html


def test_a_replica_without_the_lease_sends_nothing_yet_its_dashboard_shows_drift(
    sqlite_settings: Settings, house_spec: Path, tmp_path: Path
) -> None:
    """Another replica holds the monitor lease: this server neither notifies nor exports drift gauges, but its
    dashboard computes drift itself. Once the lease is free, this server takes over and the alert goes out."""
    registry = Registry(sqlite_settings)
    train_and_publish(house_spec, sqlite_settings)
    log_traffic(sqlite_settings, "house-prices", generate_houses(400, seed=61, shift=0.7),
                datetime.now(UTC) - timedelta(minutes=5))
    other = SqlLease(registry.engine, LEASE, holder="another-replica", ttl=3600)
    assert other.acquire()
    with webhook_receiver() as hook, Server(sqlite_settings, tmp_path / "server.log",
                                            MODELYARD_MONITOR_INTERVAL="1", MODELYARD_ALERT_WEBHOOK=hook.url) as server:
        wait_until(lambda: "another process acts (lease held elsewhere)" in server.log(), 30, "a skipped run")
        (drift,) = httpx.get(server.url + "/dashboard/data", timeout=30).json()["models"][0]["drift"]
        psi = {f["feature"]: f["psi"] for f in drift["features"]}
        assert drift["version"] == 1 and psi["area_sqm"] > 0.2
        assert server.metric("modelyard_drift_psi") == 0 and "modelyard_drift_psi{" not in httpx.get(
            server.url + "/metrics").text
        assert hook.bodies == [] and AlertBook(registry.engine).recent("house-prices") == []

        other.release()
        hook.wait_for(lambda bodies: any(b["feature"] == "area_sqm" for b in bodies), timeout=30)
        assert "this process evaluates and acts" in server.log()
        assert server.metric("modelyard_drift_psi", feature="area_sqm") == pytest.approx(psi["area_sqm"], rel=0.05)

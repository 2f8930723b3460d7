"""What runs where (issue 16): two real servers with different ``MODELYARD_REGION`` on one PostgreSQL registry
write heartbeats; ``GET /v1/fleet``, ``modelyard fleet --json`` and the dashboard in headless Chromium show
both regions, a stale instance marked and a version skew flagged. The same page shows the fault of a model
without traffic: its requests-per-second time axis read 00:00 at every tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry import tables as t
from modelyard.registry.fleet import Instance, SqlFleetStore
from tests.conftest import run_cli, train_and_publish
from tests.integration.monitor_helpers import dashboard_page
from tests.support import Server, wait_until

MODEL = "house-prices"
FAST = {"MODELYARD_HEARTBEAT_INTERVAL": "0.5", "MODELYARD_MONITOR_INTERVAL": "0", "MODELYARD_WATCH_INTERVAL": "0"}


def _fleet(url: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(url + "/v1/fleet", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _fake(store: SqlFleetStore, instance_id: str, *, region: str, version: int, age: float, every: float) -> None:
    now = datetime.now(UTC)
    store.beat(Instance(instance_id, "server", "far-away-host", 4242, now - timedelta(hours=2),
                        now - timedelta(seconds=age), region=region,
                        serving=[{"model": MODEL, "alias": "production", "version": version, "weight": None}],
                        details={"every": every}))


@pytest.mark.postgres
def test_two_regions_on_one_registry_in_the_fleet_api_cli_and_dashboard(
    pg_settings: Settings, house_spec: Path, tmp_path: Path
) -> None:
    registry = Registry(pg_settings)
    train_and_publish(house_spec, pg_settings)
    with Server(pg_settings, tmp_path / "in.log", workers=2, MODELYARD_REGION="ap-south-1",
                MODELYARD_ZONE="ap-south-1a", **FAST) as india, \
            Server(pg_settings, tmp_path / "cn.log", MODELYARD_REGION="cn-north-1", **FAST) as china:
        def regions() -> dict[str, int]:
            view = _fleet(india.url)
            out: dict[str, int] = {}
            for i in view["instances"]:
                if i["status"] == "running" and not i["stale"]:
                    out[i["region"]] = out.get(i["region"], 0) + 1
            return out

        # every uvicorn worker beats: two in India, one in China
        wait_until(lambda: regions() == {"ap-south-1": 2, "cn-north-1": 1}, 60, "three live heartbeats")
        view = _fleet(china.url)  # any server answers for the whole fleet
        assert view["regions"] == ["ap-south-1", "cn-north-1"] and view["skew"] == []
        cells = {(c["region"], c["alias"], c["version"]): c["instances"] for c in view["grid"]}
        assert cells == {("ap-south-1", "production", 1): 2, ("cn-north-1", "production", 1): 1}
        india_rows = [i for i in view["instances"] if i["region"] == "ap-south-1"]
        assert {i["zone"] for i in india_rows} == {"ap-south-1a"} and len({i["pid"] for i in india_rows}) == 2
        assert "fleet heartbeat every 0.5s" in india.log()
        for bad in ("abc", "99999999999w"):  # a 4xx naming the parameter, never a 5xx
            r = httpx.get(india.url + "/v1/fleet", params={"since": bad}, timeout=30)
            assert r.status_code == 400 and "since" in r.text, r.text

        # one instance that stopped beating long ago (stale), one live elsewhere still on v0: skew
        store = SqlFleetStore(registry.engine)
        _fake(store, "server:dead", region="eu-west-1", version=1, age=600, every=1)
        _fake(store, "server:behind", region="eu-west-1", version=7, age=0, every=600)
        with registry.engine.begin() as conn:  # the alias moved long before, so this is not a rollout
            conn.execute(update(t.aliases).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
        view = _fleet(india.url)
        stale = {i["instance_id"]: i["stale"] for i in view["instances"]}
        assert stale["server:dead"] is True and stale["server:behind"] is False
        (skew,) = view["skew"]
        assert skew["model"] == MODEL and skew["alias"] == "production" and set(skew["versions"]) == {"1", "7"}
        assert skew["versions"]["7"] == ["server:behind"] and "the registry says v1" in skew["message"]

        table = run_cli("fleet", settings=pg_settings, COLUMNS="200")
        assert table.returncode == 0, table.stderr
        assert "cn-north-1" in table.stdout and "ap-south-1a" in table.stdout and "stale" in table.stdout
        assert "version skew: house-prices@production" in table.stdout

        page_text, ticks = _dashboard(india.url)
        assert "Fleet: 4 live, 1 stale" in page_text and "ap-south-1" in page_text and "cn-north-1" in page_text
        assert "version skew: house-prices@production" in page_text and "STALE" in page_text
        # no traffic at all: the time axis still spans the window (it read 00:00 at every tick)
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks) and set(ticks) != {"00:00"}, ticks

        china.stop()  # a clean stop marks its row stopped at once
        after = {i["region"]: i["status"] for i in _fleet(india.url)["instances"] if i["kind"] == "server"
                 and i["host"] != "far-away-host"}
        assert after == {"ap-south-1": "running", "cn-north-1": "stopped"}


def _dashboard(url: str) -> tuple[str, list[str]]:
    with dashboard_page(url) as page:
        ticks = page.evaluate("() => window.modelyardCharts['rate-house-prices'].scales.x.ticks.map((t) => t.label)")
        return page.inner_text("body"), list(ticks)


def test_a_batch_run_beats_while_it_scores_and_is_stopped_after(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from modelyard import publish
    from modelyard.batch.runner import score

    settings = Settings(home=tmp_path / ".modelyard", region="eu-west-1")
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    publish("tiny", LinearRegression().fit(X, X.a * 2 + X.b), X, X.a * 2 + X.b, alias="production",
            settings=settings)
    X.to_csv(tmp_path / "rows.csv", index=False)
    result = score("tiny", source=str(tmp_path / "rows.csv"), target="scored", settings=settings, chunk_size=50)
    (run,) = SqlFleetStore(Registry(settings).engine).instances()
    assert (run.kind, run.region, run.status, run.details["run_id"]) == ("batch", "eu-west-1", "stopped",
                                                                         result.run_id)
    assert run.serving == [{"model": "tiny", "alias": "production", "version": 1, "weight": None, "pinned": True}]

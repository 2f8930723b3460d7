"""A real ``modelyard serve``: explanations over HTTP are the CLI's, the POST is routed and logged like a
predict (on the route ``explain``), and a past request is explained by id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.config import Settings
from modelyard.predlog import get_records
from modelyard.registry import Registry
from tests.conftest import run_cli, train_and_publish
from tests.integration.serving import fresh_pg_database, house_rows
from tests.support import Server, house_spec_in, wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings, Path]]:
    folder = tmp_path_factory.mktemp("explain_http")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), settings)
        server = Server(settings, folder / "server.log", MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        with server:
            yield server, settings, folder


def _logged(settings: Settings, rid: str, route: str) -> list[object]:
    engine = Registry(settings).engine
    return wait_until(lambda: [r for r in get_records(engine, rid) if r.route == route], 30,
                      f"the {route} record of {rid}")


def test_a_past_request_explained_over_http_equals_the_cli(served: tuple[Server, Settings, Path]) -> None:
    server, settings, folder = served
    rows = house_rows(3)
    r = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows},
                   headers={"X-Request-ID": "explain-me-1"}, timeout=30)
    assert r.status_code == 200, r.text
    _logged(settings, "explain-me-1", "primary")

    r = httpx.get(f"{server.url}/v1/predictions/explain-me-1/explain", params={"row": 2}, timeout=120)
    assert r.status_code == 200, r.text
    over_http = r.json()
    assert over_http["replay"]["matches"] and over_http["explanation"]["row"] == 2
    assert over_http["explanation"]["explainer"] == "tree" and over_http["explanation"]["additive"]
    assert over_http["explanation"]["model"] == {"name": "house-prices", "version": 1}

    page = folder / "explain.html"
    cli = run_cli("explain", "explain-me-1", "--row", "2", "--json", "--html", str(page), settings=settings)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == over_http
    html = page.read_text()
    assert "<svg" in html and "base value" in html and "<script" not in html  # self-contained: no script,
    assert "src=" not in html and "<link" not in html and "https://" not in html  # no CDN, no network

    table = run_cli("explain", "explain-me-1", "--row", "2", settings=settings)
    assert table.returncode == 0, table.stderr
    top = over_http["explanation"]["outputs"][0]["attributions"][0]["column"]
    assert "additivity ok" in table.stdout and top in table.stdout and "match:" in table.stdout

    missing = httpx.get(f"{server.url}/v1/predictions/nope/explain", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad_row = httpx.get(f"{server.url}/v1/predictions/explain-me-1/explain", params={"row": 7}, timeout=30)
    assert bad_row.status_code == 404 and "no row 7" in bad_row.json()["error"]["message"]


def test_post_explain_is_routed_and_logged_like_a_predict(served: tuple[Server, Settings, Path]) -> None:
    server, settings, _ = served
    rows = house_rows(2, seed=5)
    r = httpx.post(f"{server.url}/v1/models/house-prices@1/explain", json={"instances": rows},
                   headers={"X-Request-ID": "explain-post-1"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "house-prices", "version": 1} and body["route"] == "primary"
    assert len(body["explanations"]) == 2 and all(e["additive"] for e in body["explanations"])
    predicted = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows}, timeout=30)
    assert body["predictions"] == predicted.json()["predictions"]

    (record,) = _logged(settings, "explain-post-1", "explain")
    assert record.outputs == body["predictions"] and record.meta["routed"] == "primary"  # type: ignore[attr-defined]
    assert record.meta["explainer"] == "tree"  # type: ignore[attr-defined]

    # The logged explain request is itself explainable, and its explanation is the POST's.
    past = httpx.get(f"{server.url}/v1/predictions/explain-post-1/explain", params={"row": 1}, timeout=60).json()
    assert past["explanation"]["outputs"] == body["explanations"][1]["outputs"]

    bad = httpx.post(f"{server.url}/v1/models/house-prices/explain", json={"instances": [{"area_sqm": "x"}]},
                     timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "schema_error"

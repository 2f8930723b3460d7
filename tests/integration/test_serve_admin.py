"""The admin API on a real server (SQLite and PostgreSQL): refused and logged without the right bearer token,
done and recorded as a registry event with it, and absent (404) when no token is configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.config import Settings
from modelyard.registry import Registry
from tests.integration.rollout_serving import MODEL, SERVER_BACKEND, Houses, backend, fit_houses, post_all
from tests.integration.serving import house_rows
from tests.support import Server

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def houses() -> Houses:
    return fit_houses()


@pytest.fixture(params=SERVER_BACKEND)
def served(request: pytest.FixtureRequest, tmp_path: Path, houses: Houses) -> Iterator[tuple[Server, Settings]]:
    """v1 production, v2 and v3 published; admin token set."""
    with backend(request.param, tmp_path) as settings:
        houses.publish(settings, MODEL, alias="production")
        houses.publish(settings, MODEL)
        houses.publish(settings, MODEL)
        with Server(settings, tmp_path / "server.log", MODELYARD_ADMIN_TOKEN=TOKEN,
                    MODELYARD_WATCH_INTERVAL="0") as server:
            yield server, settings


def _call(server: Server, method: str, path: str, body: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}/v1/admin{path}", json=body, headers=headers, timeout=30)


CALLS = [("PUT", f"/models/{MODEL}/aliases/canary", {"version": 2, "weight": 0.5, "reason": "x"}),
         ("PUT", f"/models/{MODEL}/canary/weight", {"weight": 0.5}),
         ("POST", f"/models/{MODEL}/rollback", {"reason": "x"})]


def test_admin_calls_without_or_with_a_wrong_token_are_refused_and_logged(served: tuple[Server, Settings]) -> None:
    server, settings = served
    events_before = len(Registry(settings).events(MODEL))
    for method, path, body in CALLS:
        for headers in (None, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            r = _call(server, method, path, body, headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
    r = _call(server, "PUT", f"/models/{MODEL}/canary/weight", {"weight": "not a number"},
              {"Authorization": "Bearer wrong"})
    assert r.status_code == 401  # the token is checked before the body
    assert len(Registry(settings).events(MODEL)) == events_before  # nothing changed
    log = server.log()
    assert f"admin API: refused PUT /v1/admin/models/{MODEL}/aliases/canary from 127.0.0.1:" in log
    assert "no bearer token" in log and "a wrong token" in log
    assert "not-the-token" not in log


def test_admin_calls_with_the_token_are_done_and_recorded(served: tuple[Server, Settings]) -> None:
    server, settings = served
    registry = Registry(settings)
    r = _call(server, "PUT", f"/models/{MODEL}/aliases/canary", {"version": 2, "weight": 0.3,
                                                                  "reason": "try v2 on 30%"}, AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["aliases"]["canary"] == {"version": 2, "weight": 0.3}
    event = registry.events(MODEL, limit=1)[0]
    assert (event.kind, event.alias, event.to_version, event.actor, event.reason) == (
        "alias_set", "canary", 2, "admin-api", "try v2 on 30%")
    assert event.details["via"] == "admin-api"
    assert server.metric("modelyard_canary_weight", model=MODEL) == pytest.approx(0.3)  # applied at once
    served_by = {r.version for r in post_all(f"{server.url}/v1/models/{MODEL}/predict", house_rows(60),
                                             headers=[{"X-Routing-Key": f"k{i}"} for i in range(60)])}
    assert served_by == {1, 2}

    r = _call(server, "PUT", f"/models/{MODEL}/canary/weight", {"weight": 0.6, "reason": "looks fine"},
              {**AUTH, "X-Modelyard-Actor": "alice"})
    assert r.status_code == 200, r.text
    event = registry.events(MODEL, limit=1)[0]
    assert (event.kind, event.actor, event.reason, event.details["weight"]) == (
        "weight", "admin-api:alice", "looks fine", 0.6)
    assert registry.aliases(MODEL)["canary"].weight == 0.6

    r = _call(server, "PUT", f"/models/{MODEL}/aliases/production", {"version": 3, "reason": "ship v3"}, AUTH)
    assert r.status_code == 200 and registry.aliases(MODEL)["production"].version == 3
    r = _call(server, "POST", f"/models/{MODEL}/rollback", {"reason": "v3 is wrong"}, AUTH)
    assert r.status_code == 200, r.text
    assert (r.json()["from_version"], r.json()["to_version"]) == (3, 1)
    event = registry.events(MODEL, limit=1)[0]
    assert (event.kind, event.alias, event.from_version, event.to_version, event.actor, event.reason) == (
        "rollback", "production", 3, 1, "admin-api", "v3 is wrong")
    answer = httpx.post(f"{server.url}/v1/models/{MODEL}@production/predict",
                        json={"instances": house_rows(1)}, timeout=30).json()
    assert answer["model"]["version"] in (1, 2)  # production is v1 again (or the canary's share)
    assert server.metric("modelyard_alias_version", model=MODEL, alias="production") == 1


def test_admin_mistakes_are_4xx(served: tuple[Server, Settings]) -> None:
    server, _ = served
    assert _call(server, "PUT", "/models/no-such-model/canary/weight", {"weight": 0.1}, AUTH).status_code == 404
    assert _call(server, "PUT", f"/models/{MODEL}/canary/weight", {"weight": 2}, AUTH).status_code == 422
    no_canary = _call(server, "PUT", f"/models/{MODEL}/canary/weight", {"weight": 0.2}, AUTH)
    assert no_canary.status_code == 409 and "no canary" in no_canary.json()["error"]["message"]
    assert _call(server, "POST", f"/models/{MODEL}/rollback", None, AUTH).status_code == 409  # no history
    weight_on_shadow = _call(server, "PUT", f"/models/{MODEL}/aliases/shadow", {"version": 2, "weight": 0.1},
                             AUTH)
    assert weight_on_shadow.status_code == 400
    assert _call(server, "PUT", f"/models/{MODEL}/aliases/shadow", {"version": 9}, AUTH).status_code == 404


def test_admin_api_is_off_without_a_token(tmp_path: Path, houses: Houses) -> None:
    with backend("sqlite", tmp_path) as settings:
        houses.publish(settings, MODEL, alias="production")
        houses.publish(settings, MODEL)
        with Server(settings, tmp_path / "server.log", MODELYARD_WATCH_INTERVAL="0") as server:
            for method, path, body in CALLS:
                for headers in (None, AUTH, {"Authorization": "Bearer x"}):
                    r = _call(server, method, path, body, headers)
                    assert r.status_code == 404, (method, path, r.text)
            assert Registry(settings).aliases(MODEL).keys() == {"production"}
            assert "/v1/admin" not in server.log()

"""As a user on the embedded defaults (SQLite): train, `modelyard serve`, predict over HTTP, stop with
SIGTERM, then `predictions list/show` and `replay`, which must notice an output that no longer matches."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import update

from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry.tables import predictions
from tests.conftest import run_cli
from tests.integration.serving import house_rows
from tests.support import Server


def test_serve_then_list_show_and_replay_predictions(house_spec: Path, sqlite_settings: Settings,
                                                     tmp_path: Path) -> None:
    trained = run_cli("train", str(house_spec), "--alias", "production", settings=sqlite_settings)
    assert trained.returncode == 0, trained.stderr
    rows = house_rows(3)
    with Server(sqlite_settings, tmp_path / "server.log") as server:
        r = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows},
                       headers={"X-Request-ID": "cli-check-1"})
        assert r.status_code == 200, r.text
        answer = r.json()["predictions"]
        assert httpx.post(f"{server.url}/v1/models/house-prices/predict",
                          json={"instances": [{"area_sqm": 3}]},
                          headers={"X-Request-ID": "cli-check-bad"}).status_code == 422
    # the server stopped with SIGTERM: its log was flushed on the way out

    listed = run_cli("predictions", "list", "house-prices", "--since", "1h", settings=sqlite_settings)
    assert listed.returncode == 0, listed.stderr
    assert "cli-check-1" in listed.stdout and "cli-check-bad" in listed.stdout
    assert "schema_error" in listed.stdout
    bad_since = run_cli("predictions", "list", "house-prices", "--since", "soon", settings=sqlite_settings)
    assert bad_since.returncode == 1 and "expected a duration" in bad_since.stderr

    shown = run_cli("predictions", "show", "cli-check-1", "--json", settings=sqlite_settings)
    assert shown.returncode == 0, shown.stderr
    (record,) = json.loads(shown.stdout)
    assert record["outputs"] == answer and record["inputs"] == rows and record["version"] == 1
    missing = run_cli("predictions", "show", "no-such-request", settings=sqlite_settings)
    assert missing.returncode == 1 and "no prediction with request id 'no-such-request'" in missing.stderr

    replayed = run_cli("replay", "cli-check-1", settings=sqlite_settings)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "match: house-prices v1 request cli-check-1" in replayed.stdout

    changed = [answer[0], answer[1] + 1000.0, answer[2]]
    with Registry(sqlite_settings).engine.begin() as conn:
        conn.execute(update(predictions).where(predictions.c.request_id == "cli-check-1")
                     .values(outputs=changed))
    mismatch = run_cli("replay", "cli-check-1", settings=sqlite_settings)
    assert mismatch.returncode == 1
    assert "MISMATCH" in mismatch.stdout and "1 of 3 outputs differ" in mismatch.stdout
    assert "1000" in mismatch.stdout  # the difference is shown
    diff = json.loads(run_cli("replay", "cli-check-1", "--json", settings=sqlite_settings).stdout)
    assert diff["matches"] is False and [d["row"] for d in diff["differences"]] == [1]

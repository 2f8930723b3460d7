"""`modelyard check / promote / rollback` as a user runs them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.rollout import promote
from tests.conftest import generate_houses, run_cli, train_and_publish
from tests.rollout_helpers import MODEL, house_spec_folder, log, records


def test_check_promote_rollback_from_the_command_line(sqlite_settings: Settings, house_spec: Path,
                                                      tmp_path: Path) -> None:
    train_and_publish(house_spec, sqlite_settings, alias="production")  # v1
    train_and_publish(house_spec, sqlite_settings, alias=None)  # v2: a faithful retrain
    outdated = house_spec_folder(tmp_path / "old", generate_houses(3000, seed=11, shift=0.3))
    train_and_publish(outdated, sqlite_settings, alias=None)  # v3: trained on shifted data

    failed = run_cli("check", MODEL, "3", "--against", "production", "--skip-benchmark",
                     settings=sqlite_settings)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "gate failed" in failed.stderr and "shift of the mean prediction" in failed.stderr
    assert "FAIL" in failed.stdout

    passed = run_cli("check", MODEL, "2", "--against", "production", "--json", "--max-slowdown", "20",
                     "--latency-calls", "30",
                     settings=sqlite_settings)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    report = json.loads(passed.stdout)
    assert report["passed"] is True and report["candidate"] == 2 and report["current"] == 1
    assert [g["gate"] for g in report["gates"]] == ["differential", "benchmark", "importance"]

    refused = run_cli("promote", MODEL, "3", "--to", "canary", "--weight", "0.1", "--skip-benchmark",
                      settings=sqlite_settings)
    assert refused.returncode == 1 and "was not promoted" in refused.stderr

    forced = run_cli("promote", MODEL, "3", "--to", "canary", "--weight", "0.1", "--force", "--reason",
                     "try it on 10%", settings=sqlite_settings, MODELYARD_ACTOR="erin")
    assert forced.returncode == 0, forced.stderr
    assert "house-prices@canary → version 3 with weight 0.1" in forced.stdout
    stopped = run_cli("rollback", MODEL, "--canary", settings=sqlite_settings)
    assert stopped.returncode == 0 and "canary v3 gets no more traffic" in stopped.stdout

    promoted = run_cli("promote", MODEL, "2", "--to", "production", "--skip-benchmark",
                       settings=sqlite_settings, MODELYARD_ACTOR="erin")
    assert promoted.returncode == 0, promoted.stderr
    back = run_cli("rollback", MODEL, "--reason", "customers complain", settings=sqlite_settings,
                   MODELYARD_ACTOR="frank")
    assert back.returncode == 0 and "→ version 1" in back.stdout

    events = Registry(sqlite_settings).events(MODEL)
    kinds = [(e.kind, e.alias, e.actor) for e in events[:5]]
    assert kinds == [("rollback", "production", "frank"), ("promote", "production", "erin"),
                     ("rollback", "canary", kinds[2][2]), ("promote", "canary", "erin"),
                     ("promote_refused", "canary", kinds[4][2])]
    assert events[0].reason == "customers complain" and events[3].reason == "try it on 10%"
    assert events[3].details["forced"] is True


def test_shadow_report_since_two_weeks_uses_the_one_duration_grammar(sqlite_settings: Settings,
                                                                     house_spec: Path) -> None:
    v1 = train_and_publish(house_spec, sqlite_settings, alias="production")
    v2 = train_and_publish(house_spec, sqlite_settings, alias=None)
    registry = Registry(sqlite_settings)
    promote(registry, MODEL, v2, to="shadow")
    now = datetime.now(UTC)
    for age, n in ((timedelta(days=10), 30), (timedelta(days=20), 7)):  # inside and outside two weeks
        ids = [uuid.uuid4().hex for _ in range(n)]
        recs = [*records(MODEL, v1, "primary", n, request_ids=ids),
                *records(MODEL, v2, "shadow", n, request_ids=ids)]
        for r in recs:
            r.ts = now - age
        log(sqlite_settings, recs)
    proc = run_cli("shadow", "report", MODEL, "--since", "2w", "--json", settings=sqlite_settings)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)["figures"]
    assert figures["shadow_records"] == 30 and figures["paired_requests"] == 30
    combined = run_cli("shadow", "report", MODEL, "--since", "1w 5d", "--json", settings=sqlite_settings)
    assert combined.returncode == 0 and json.loads(combined.stdout)["figures"]["shadow_records"] == 30
    listed = run_cli("predictions", "list", MODEL, "--since", "2w", "--route", "shadow", "--limit", "100",
                     settings=sqlite_settings)
    assert listed.returncode == 0 and "30 newest predictions" in listed.stdout
    bad = run_cli("shadow", "report", MODEL, "--since", "2 fortnights", settings=sqlite_settings)
    assert bad.returncode != 0
    assert "'2 fortnights'" in bad.stderr and "s, m, h, d, w" in bad.stderr

"""`modelyard log status|ship` as an operator types it: what waits in the write-ahead segments, and shipping
it by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, list_records, segments
from modelyard.registry.db import get_engine
from tests.conftest import cli_env


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelyard", "log", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=120)


def test_status_counts_the_waiting_segments_and_ship_empties_them(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".modelyard")
    folder = settings.resolved_spill_dir
    folder.mkdir(parents=True)
    old = datetime.now(UTC) - timedelta(minutes=5)
    for n, count in enumerate((3, 4)):
        lines = [segments.dumps_record(PredictionRecord(request_id=f"s{n}-{i}", model="m", version=1, ts=old))
                 for i in range(count)]
        (folder / f"wal-9-{n}-abc.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    segments.write_ship_error(folder, "connection refused")

    status = _run(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["segments"] == 2 and body["records"] == 7 and body["durability"] == "process"
    assert 290 < body["oldest_age_seconds"] < 600 and body["last_ship_error"]["message"] == "connection refused"
    human = _run(settings, "status")
    assert "7 waiting for the database" in human.stdout and "connection refused" in human.stdout

    shipped = _run(settings, "ship")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "shipped 7 records; 0 records in 0 segments left" in shipped.stdout
    assert len(list_records(get_engine(settings.resolved_database_url), "m", limit=None)) == 7
    after = json.loads(_run(settings, "status", "--json").stdout)
    assert after["segments"] == 0 and after["records"] == 0 and after["last_ship_error"] is None


def test_ship_fails_loudly_while_the_database_is_away(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".modelyard", database_url=f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    folder = settings.resolved_spill_dir
    folder.mkdir(parents=True)
    (folder / "wal-9-0-abc.jsonl").write_bytes(
        segments.dumps_record(PredictionRecord(request_id="r", model="m", version=1)) + b"\n")
    shipped = _run(settings, "ship")
    assert shipped.returncode == 1 and "1 records in 1 segments left" in shipped.stdout
    assert json.loads(_run(settings, "status", "--json").stdout)["last_ship_error"] is not None

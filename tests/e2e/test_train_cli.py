"""A user trains, inspects, moves aliases and reproduces from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry import tables as t
from tests.conftest import run_cli


def test_train_show_alias_and_reproduce(sqlite_settings: Settings, house_spec: Path) -> None:
    out = run_cli("train", str(house_spec), "--alias", "production", settings=sqlite_settings)
    assert out.returncode == 0, out.stderr
    assert "published house-prices version 1" in out.stdout and "r2" in out.stdout
    assert run_cli("train", str(house_spec), settings=sqlite_settings).returncode == 0

    listed = run_cli("models", "list", "--json", settings=sqlite_settings)
    rows = json.loads(listed.stdout)
    assert rows == [{"name": "house-prices", "latest": 2, "versions": 2, "aliases": {"production": 1},
                     "weights": {}}]

    shown = run_cli("models", "show", "house-prices@production", settings=sqlite_settings)
    assert shown.returncode == 0 and "version 1" in shown.stdout and "neighborhood" in shown.stdout

    moved = run_cli("alias", "set", "house-prices", "2", "production", "--reason", "better", settings=sqlite_settings)
    assert moved.returncode == 0
    assert Registry(sqlite_settings).resolve("house-prices").version == 2

    repro = run_cli("reproduce", "house-prices", "1", settings=sqlite_settings)
    assert repro.returncode == 0, repro.stderr
    assert "identical" in repro.stdout


def test_reproduce_reports_a_lineage_mismatch_when_the_data_changed(sqlite_settings: Settings,
                                                                    house_spec: Path) -> None:
    assert run_cli("train", str(house_spec), settings=sqlite_settings).returncode == 0
    data = house_spec.parent / "houses.csv"
    frame = pd.read_csv(data)
    frame.loc[0, "price"] += 1
    frame.to_csv(data, index=False)
    out = run_cli("reproduce", "house-prices", "1", settings=sqlite_settings)
    assert out.returncode != 0
    assert "lineage mismatch" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace('"crime_index"]', '"crime_index", "no_such_column"]'), "'no_such_column' is not a column"),
        (lambda s: s.replace("HistGradientBoostingRegressor", "NoSuchRegressor"), "unknown estimator"),
        (lambda s: s.replace('source = "houses.csv"', 'source = "gone.csv"'), "does not exist"),
        (lambda s: s + "\n[[[ not toml\n", "not valid TOML"),
    ],
)
def test_a_bad_spec_is_one_clear_line_and_writes_nothing(sqlite_settings: Settings, house_spec: Path, edit,
                                                         needle: str) -> None:
    house_spec.write_text(edit(house_spec.read_text()))
    out = run_cli("train", str(house_spec), settings=sqlite_settings)
    assert out.returncode != 0
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    registry = Registry(sqlite_settings)
    with registry.engine.connect() as conn:
        assert conn.execute(t.model_versions.select()).fetchall() == []
    archives = list(registry.store.root.rglob("*.tar")) if registry.store.root.exists() else []
    assert archives == []


def test_dry_run_validates_without_publishing(sqlite_settings: Settings, house_spec: Path) -> None:
    out = run_cli("train", str(house_spec), "--dry-run", settings=sqlite_settings)
    assert out.returncode == 0 and "nothing was published" in out.stdout
    assert Registry(sqlite_settings).models() == []


def test_train_from_a_sql_query(sqlite_settings: Settings, house_spec: Path, tmp_path: Path) -> None:
    db = tmp_path / "houses.db"
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{db}")
    pd.read_csv(house_spec.parent / "houses.csv").to_sql("houses", engine, index=False)
    engine.dispose()
    text = house_spec.read_text().replace(
        'source = "houses.csv"', f'source = "sqlite:///{db}"\nquery = "SELECT * FROM houses WHERE area_sqm > 40"'
    )
    house_spec.write_text(text)
    out = run_cli("train", str(house_spec), "--json", settings=sqlite_settings)
    assert out.returncode == 0, out.stderr
    manifest = Registry(sqlite_settings).resolve("house-prices@1").manifest
    assert manifest.lineage.data is not None and manifest.lineage.data.description.startswith("sql:SELECT")

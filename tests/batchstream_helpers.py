"""Data and model helpers shared by the batch and stream tests (real databases, real brokers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

import modelyard
from modelyard.config import Settings, normalize_database_url
from modelyard.registry import Registry
from tests.conftest import EXAMPLES, generate_houses


def _train(folder: Path, spec_text: str) -> Path:
    from modelyard.pipeline import load_spec, train

    (folder / "spec.toml").write_text(spec_text)
    train(load_spec(folder / "spec.toml")).write_bundle(folder / "bundle")
    return folder / "bundle"


def train_houses(folder: Path, rows: int, max_iter: int) -> Path:
    """The house-price example trained on ``rows`` generated rows with ``max_iter`` boosting iterations; its
    bundle's folder (under ``folder``)."""
    generate_houses(rows, seed=11).to_csv(folder / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text()
    return _train(folder, spec.replace("max_iter = 100", f"max_iter = {max_iter}"))


_bundles: dict[str, Path] = {}


def house_bundle_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The house-price model with 20 boosting iterations, trained once per session: publish it anywhere."""
    if "house" not in _bundles:
        _bundles["house"] = train_houses(tmp_path_factory.mktemp("house_bundle"), 3000, 20)
    return _bundles["house"]


def cancer_bundle_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "cancer" not in _bundles:
        import subprocess
        import sys

        folder = tmp_path_factory.mktemp("cancer_bundle")
        subprocess.run([sys.executable, str(EXAMPLES / "breast_cancer" / "generate.py"), "--out",
                        str(folder / "breast_cancer.csv")], check=True, capture_output=True)
        _bundles["cancer"] = _train(folder, (EXAMPLES / "breast_cancer" / "spec.toml").read_text())
    return _bundles["cancer"]


def publish(bundle: Path, settings: Settings, alias: str | None = "production") -> int:
    return Registry(settings).publish(bundle, alias=alias)


def publish_linear(settings: Settings, name: str, estimator: Any = None, alias: str | None = "production") -> int:
    """Publish ``3·a`` over columns a, b (a ``LinearRegression`` unless ``estimator`` is given)."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50)})
    y = 3 * frame["a"]
    return modelyard.publish(name, (estimator or _linear()).fit(frame, y), frame, y, alias=alias,
                             settings=settings)


def _linear() -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


def houses_input(rows: int, seed: int = 5) -> pd.DataFrame:
    """Rows to score: the generator's features without the target, plus a unique integer ``id``."""
    frame = generate_houses(rows, seed=seed).drop(columns=["price"])
    frame.insert(0, "id", np.arange(1, rows + 1, dtype="int64"))
    return frame


def spoil(frame: pd.DataFrame, bad: dict[int, tuple[str, object]]) -> pd.DataFrame:
    """Put a bad ``value`` into ``column`` of the row at each position: rows the schema must refuse."""
    frame = frame.copy()
    for col in {c for c, _ in bad.values()}:
        frame[col] = frame[col].astype(object)
    for pos, (col, value) in bad.items():
        frame.iat[pos, frame.columns.get_loc(col)] = value
    return frame


def write_table(url: str, table: str, frame: pd.DataFrame) -> None:
    """Create ``table`` from ``frame``'s dtypes and load it (COPY on PostgreSQL)."""
    url = normalize_database_url(url)
    engine = sa.create_engine(url)
    try:
        frame.head(0).to_sql(table, engine, index=False, if_exists="replace",
                             dtype={c: sa.Text() for c in frame.columns if frame[c].dtype == object})
        if engine.dialect.name != "postgresql":
            frame.to_sql(table, engine, index=False, if_exists="append", chunksize=5000)
            return
    finally:
        engine.dispose()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    values = frame.astype(object).where(frame.notna(), None)
    with psycopg.connect(plain) as conn, conn.cursor() as cur, cur.copy(f'COPY "{table}" FROM STDIN') as copy:
        for row in values.itertuples(index=False):
            copy.write_row(list(row))


def read_sql(url: str, sql: str) -> pd.DataFrame:
    engine = sa.create_engine(normalize_database_url(url))
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn)
    finally:
        engine.dispose()


def scalar(url: str, sql: str, default: object = None) -> object:
    engine = sa.create_engine(normalize_database_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    except sa.exc.DBAPIError:
        return default
    finally:
        engine.dispose()


def run_details(url: str, run_id: str | None = None) -> dict[str, Any]:
    """The ``details`` of a batch run in ``modelyard_batch_runs`` (the first run when no id is given)."""
    import json

    where = "" if run_id is None else f" WHERE run_id = '{run_id}'"
    run = read_sql(url, f"SELECT details FROM modelyard_batch_runs{where}").iloc[0]
    details: dict[str, Any] = run["details"] if isinstance(run["details"], dict) else json.loads(run["details"])
    return details


def db_url(settings: Settings) -> str:
    return settings.resolved_database_url

"""Shared by the server rollout tests: a fitted house pipeline, models published around it, many requests
sent at once, and the prediction log read back. Servers come from ``tests.integration.serving``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import modelyard
from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, list_records
from modelyard.registry import Registry
from modelyard.rollout import bucket, promote
from tests.conftest import generate_houses
from tests.integration.serving import fresh_pg_database
from tests.rollout_estimators import FailsOnSentinel, Offset
from tests.support import Server

ROOT = Path(__file__).resolve().parents[2]
# The server unpickles the test estimators (tests/rollout_estimators.py): it needs the checkout on its path.
SERVER_PYTHONPATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SERVER_BACKEND = [pytest.param("postgres", marks=pytest.mark.postgres)]
"""For a test of the server's own logic (routing, admin, shadow), not of the store: one real server on
PostgreSQL, the scaled-out setup. The stores themselves run on both (tests/contracts, test_registry)."""

MODEL = "house-prices"  # v1 production, v2 canary at WEIGHT (the same fit), v3 shadow (+OFFSET)
BROKEN = "houses-broken-shadow"  # v1 production, v2 shadow that raises on a negative crime index
WEIGHT = 0.2
OFFSET = 1e9


@contextlib.contextmanager
def backend(kind: str, folder: Path) -> Iterator[Settings]:
    """Settings on a fresh SQLite file or a fresh PostgreSQL database (dropped afterwards)."""
    if kind == "sqlite":
        yield Settings(home=folder / ".modelyard")
        return
    with fresh_pg_database() as url:
        yield Settings(home=folder / ".modelyard", database_url=url)


@dataclass
class Houses:
    """A fitted house-price pipeline and the frame its published copies take their schema from."""

    pipeline: Any
    X: pd.DataFrame
    y: pd.Series

    def publish(self, settings: Settings, name: str, pipeline: Any = None, alias: str | None = None) -> int:
        return modelyard.publish(name, self.pipeline if pipeline is None else pipeline, self.X, self.y,
                                 alias=alias, settings=settings)


def fit_houses() -> Houses:
    """A linear model on the numeric columns (a one-row prediction costs well under a millisecond: these
    tests are about routing, and send thousands of requests); the schema has every column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    frame = generate_houses(400, seed=5)
    X, y = frame.drop(columns="price"), frame["price"]
    numeric = [c for c in X.columns if X[c].dtype.kind in "fi"]
    pipeline = make_pipeline(ColumnTransformer([("num", SimpleImputer(), numeric)]), LinearRegression())
    return Houses(pipeline.fit(X, y), X, y)


@dataclass
class Reply:
    index: int
    status: int
    body: dict[str, Any]
    request_id: str

    @property
    def version(self) -> int | None:
        return int(self.body["model"]["version"]) if self.status == 200 else None


def post_all(url: str, rows: list[dict[str, Any]], *, headers: list[dict[str, str]] | None = None,
             concurrency: int = 32) -> list[Reply]:
    """One 1-row request per row, ``concurrency`` at a time; replies in the order of ``rows``."""

    async def run() -> list[Reply]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def one(i: int) -> Reply:
                async with gate:
                    r = await client.post(url, json={"instances": [rows[i]]},
                                          headers=headers[i] if headers else None)
                return Reply(i, r.status_code, r.json(), r.headers.get("x-request-id", ""))

            return await asyncio.gather(*(one(i) for i in range(len(rows))))

    return asyncio.run(run())


def logged(settings: Settings, model: str, route: str) -> dict[str, PredictionRecord]:
    """The model's records on one route, by request id."""
    records = list_records(Registry(settings).engine, model, route=route, limit=None)
    return {r.request_id: r for r in records}


def expected_version(key: str) -> int:
    """The version of MODEL a routing key must see: the policy's hash, computed here independently."""
    return 2 if bucket(MODEL, key) < WEIGHT else 1


@contextlib.contextmanager
def canary_shadow_server(kind: str, folder: Path, houses: Houses) -> Iterator[tuple[Server, Settings]]:
    """MODEL with a canary and a shadow, BROKEN with a failing shadow; a server without the watcher."""
    with backend(kind, folder) as settings:
        registry = Registry(settings)
        houses.publish(settings, MODEL, alias="production")
        canary = houses.publish(settings, MODEL)
        promote(registry, MODEL, canary, to="canary", weight=WEIGHT, force=True, actor="test")
        houses.publish(settings, MODEL, Offset(houses.pipeline, OFFSET), alias="shadow")
        houses.publish(settings, BROKEN, alias="production")
        houses.publish(settings, BROKEN, FailsOnSentinel(houses.pipeline), alias="shadow")
        server = Server(settings, folder / "server.log", PYTHONPATH=SERVER_PYTHONPATH,
                        MODELYARD_WATCH_INTERVAL="0", MODELYARD_LOG_FLUSH_INTERVAL="0.1",
                        MODELYARD_RELOAD_INTERVAL="0.3")
        with server:
            yield server, settings

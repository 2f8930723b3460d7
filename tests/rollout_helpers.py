"""Shared by the rollout tests: house-price bundles trained once per module, published per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.registry import Registry
from tests.conftest import EXAMPLES, generate_houses

MODEL = "house-prices"


def house_spec_folder(root: Path, frame: pd.DataFrame | None = None,
                      edit: Callable[[str], str] = lambda s: s) -> Path:
    """The same folder as conftest's ``house_spec`` (3000 rows, max_iter 30), optionally edited."""
    root.mkdir(parents=True, exist_ok=True)
    (generate_houses(3000, seed=11) if frame is None else frame).to_csv(root / "houses.csv", index=False)
    spec = (EXAMPLES / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
    (root / "spec.toml").write_text(edit(spec))
    return root / "spec.toml"


def train_bundle(spec_path: Path, out: Path) -> Path:
    from modelyard.pipeline import load_spec, train

    train(load_spec(spec_path)).write_bundle(out)
    return out


def publish(settings: Settings, bundle: Path, alias: str | None = None) -> int:
    return Registry(settings).publish(bundle, alias=alias, reason="test")


def records(model: str, version: int, route: str, n: int, *, errors: int = 0,
            outputs: Iterable[float] | None = None, request_ids: list[str] | None = None,
            latency_ms: float = 5.0) -> list[PredictionRecord]:
    """``n`` records; the first ``errors`` of them failed; ``outputs`` one value per record."""
    outs = list(outputs) if outputs is not None else [100.0] * n
    ids = request_ids or [uuid.uuid4().hex for _ in range(n)]
    return [
        PredictionRecord(request_id=ids[i], model=model, version=version, route=route,
                         inputs=[{"x": i}], outputs=None if i < errors else [outs[i]],
                         latency_ms=latency_ms, error="boom" if i < errors else None)
        for i in range(n)
    ]


def log(settings: Settings, recs: list[PredictionRecord]) -> None:
    insert_records(Registry(settings).engine, recs)

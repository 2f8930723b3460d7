"""The chunk function: score a frame of input rows with ``Model.predict_partial``, the bad ones set aside.

It is the only code that runs on Dask workers, so it takes plain data (a frame, a pinned model version,
settings) and returns plain data (a ``ScoredChunk``); a worker process loads each model version once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.config import Settings
from modelyard.errors import BatchError
from modelyard.registry import Registry
from modelyard.runtime import Model


@dataclass
class Rejected:
    """One input row that failed validation, with the reason a user can act on."""

    key: Any
    reason: str
    field: str | None
    row: dict[str, Any]
    position: int  # in the chunk


@dataclass
class ScoredChunk:
    """What the chunk function returns: keys and predictions in input order, plus the rejected rows."""

    keys: np.ndarray  # numpy all the way to the writer: no per-row Python objects on the hot path
    predictions: np.ndarray
    probabilities: pa.Array | None  # one JSON object per scored row, {"class": probability, ...}
    rejected: list[Rejected] = field(default_factory=list)
    inputs: list[dict[str, Any]] | None = None  # the scored rows, only when per-row logging asks for them
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # --keep: input columns of the scored rows

    @property
    def n_rows(self) -> int:
        return len(self.keys) + len(self.rejected)


def _row_json(frame: pd.DataFrame, position: int) -> dict[str, Any]:
    """One row as JSON-safe values (NaN → null, numpy scalars → Python)."""
    return dict(json.loads(frame.iloc[[position]].to_json(orient="records", date_format="iso"))[0])


def score_chunk(model: Model, frame: pd.DataFrame, key: str | None, offset: int = 0,
                *, with_inputs: bool = False, keep: tuple[str, ...] = ()) -> ScoredChunk:
    """Score one chunk. ``key`` names the key column; without one the key is the row's input position."""
    frame = frame.reset_index(drop=True)
    if key is None:
        keys = np.arange(offset, offset + len(frame))
        missing_key = np.zeros(len(frame), dtype=bool)
    else:
        if key not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise BatchError(f"the key column '{key}' is not in the input (columns: {columns})")
        column = frame[key]
        keys = column.to_numpy() if pd.api.types.is_integer_dtype(column) else column.to_numpy(dtype=object)
        missing_key = frame[key].isna().to_numpy()
    rejected: dict[int, Rejected] = {}
    for pos in np.flatnonzero(missing_key):
        rejected[int(pos)] = Rejected(None, f"the key column '{key}' is empty", key,
                                    _row_json(frame, int(pos)), int(pos))
    candidates = np.flatnonzero(~missing_key)
    sub = frame.iloc[candidates].reset_index(drop=True) if len(candidates) < len(frame) else frame
    result = model.predict_partial(sub, probabilities=model.has_proba)
    for error in result.errors:
        original = int(candidates[error.row])
        rejected[original] = Rejected(_py(keys[original]), error.naming(offset + original),
                                      error.field, _row_json(frame, original), original)
    scored_positions = candidates[result.positions]
    predictions = result.predictions
    probabilities: pa.Array | None = None
    if result.probabilities is not None and len(result.positions):
        labels = [str(c) for c in (model.classes_ or range(result.probabilities.shape[1]))]
        probabilities = probability_json(result.probabilities, labels)
    inputs = None
    if with_inputs and len(scored_positions):
        inputs = json.loads(frame.iloc[scored_positions].to_json(orient="records", date_format="iso"))
    kept = {name: frame[name].to_numpy()[scored_positions] for name in keep if name != key}
    return ScoredChunk(
        kept=kept,
        keys=keys[scored_positions],
        predictions=predictions,
        probabilities=probabilities,
        rejected=[rejected[p] for p in sorted(rejected)],
        inputs=inputs,
    )


def probability_json(proba: np.ndarray, labels: list[str]) -> pa.Array:
    """Each row of ``proba`` (rounded to 6 places) as the JSON object ``orjson`` makes of
    ``dict(zip(labels, row))``, built column by column with Arrow instead of a dict and a dump per row.

    The numbers are Arrow's shortest round-trip text, which denotes the same float as ``orjson``'s (``1e-6``
    may be written ``0.000001``); a whole number keeps its ``.0`` and a non-finite one is ``null``, as there.
    """
    n = len(proba)
    parts: list[Any] = []
    for i, label in enumerate(labels):
        column = np.ascontiguousarray(proba[:, i]).round(6)
        text = pc.cast(pa.array(column), pa.string())
        finite = np.isfinite(column)
        whole = finite & (column == np.trunc(column)) & (np.abs(column) < 1e15)  # Arrow writes 1, orjson 1.0
        if whole.any():
            text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
        if not finite.all():
            text = pc.if_else(pa.array(finite), text, "null")
        parts += [("{" if i == 0 else ",") + orjson.dumps(label).decode() + ":", text]
    if not labels:
        return pa.array(["{}"] * n, pa.string())
    return pc.binary_join_element_wise(*parts, "}", "")


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---- on a Dask worker: load each pinned version once per process ------------------------------------
_models: dict[tuple[str, str, str, int], Model] = {}
_models_lock = threading.Lock()


def load_pinned(settings: Settings, name: str, version: int) -> Model:
    """The model ``name`` v``version`` from the registry ``settings`` point at, cached per process."""
    cache_key = (settings.resolved_database_url, str(settings.resolved_artifact_root), name, version)
    with _models_lock:
        model = _models.get(cache_key)
        if model is None:
            registry = Registry(settings)
            model = Model.load(registry.load_bundle(registry.get_version(name, version)))
            _models[cache_key] = model
        return model


def score_chunk_remote(settings: Settings, name: str, version: int, frame: pd.DataFrame, key: str | None,
                       offset: int, with_inputs: bool = False, keep: tuple[str, ...] = ()) -> ScoredChunk:
    """``score_chunk`` where the model is loaded by the worker itself (checksums verified there)."""
    return score_chunk(load_pinned(settings, name, version), frame, key, offset, with_inputs=with_inputs,
                       keep=keep)

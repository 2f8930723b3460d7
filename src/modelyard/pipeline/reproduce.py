"""Rebuild a published version from its manifest and prove it: same data hash, same predictions.

An online version (``modelyard learn``) is rebuilt by replaying its recorded stream range on top of its
parent version (``reproduce_online``; the caller reads the range from the broker): the same counts, the same
``model.joblib`` checksum and the same predictions on its held-out reference set, bit for bit."""

from __future__ import annotations

import copy
import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np

from modelyard.bundle import MODEL_FILE, PREDICTION_COLUMN, Bundle, sha256_file
from modelyard.errors import LineageMismatchError, SpecError
from modelyard.pipeline.lineage import environment, stream_lineage
from modelyard.pipeline.online import Event, OnlineLearner
from modelyard.pipeline.spec import parse_spec
from modelyard.pipeline.training import load_training_data, train


@dataclass
class ReproduceReport:
    data_sha256: str
    rows_compared: int
    identical: bool
    max_abs_diff: float
    package_changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    model_sha256: str | None = None  # online versions: the rebuilt model.joblib, equal to the published one


def reproduce(bundle: Bundle) -> ReproduceReport:
    """Retrain from ``bundle``'s manifest; raise ``LineageMismatchError`` if data or predictions differ."""
    lineage = bundle.manifest.lineage
    if lineage.spec is None:
        raise SpecError(
            f"{bundle.name} v{bundle.version} was not trained from a spec "
            f"({lineage.source or 'unknown source'}): there is nothing to retrain from"
        )
    base_dir = Path(lineage.spec_dir) if lineage.spec_dir else None
    spec = parse_spec(lineage.spec, base_dir=base_dir, origin=f"{bundle.name} v{bundle.version} manifest")
    window = lineage.data.window if lineage.data else None  # a windowed query reads the same window again
    data = load_training_data(spec, window)
    recorded = lineage.data.sha256 if lineage.data else None
    if recorded is None:
        raise SpecError(f"{bundle.name} v{bundle.version}'s lineage records no data SHA-256: "
                        "there is nothing to compare the data with")
    if data.sha256 != recorded:
        raise LineageMismatchError(
            f"lineage mismatch: the data at {data.location} now hashes to {data.sha256[:12]}..., "
            f"version {bundle.version} was trained on {recorded[:12]}...",
            recorded=recorded,
            actual=data.sha256,
        )
    result = train(spec, data=data, window=window)
    report = _compare(bundle, result.pipeline, data.sha256, spec.model.estimator)
    if not report.identical:
        raise LineageMismatchError(
            f"retrained {bundle.name} v{bundle.version} predicts differently on the reference set "
            f"(max difference {report.max_abs_diff:.6g} over {report.rows_compared} rows)",
            report=report.__dict__,
        )
    return report


def _compare(bundle: Bundle, pipeline: object, data_sha256: str, estimator: str) -> ReproduceReport:
    """The rebuilt pipeline's predictions on the bundle's reference set against the published ones."""
    reference = bundle.reference()
    new = np.asarray(pipeline.predict(bundle.reference_inputs()))  # type: ignore[attr-defined]
    old = reference[PREDICTION_COLUMN].to_numpy()
    identical = bool(np.array_equal(new, old))
    max_diff = 0.0
    if np.issubdtype(new.dtype, np.number) and np.issubdtype(old.dtype, np.number):
        max_diff = float(np.max(np.abs(new.astype(float) - old.astype(float)))) if len(new) else 0.0
    else:
        max_diff = float(np.mean(new != old))
    lineage = bundle.manifest.lineage
    before = lineage.environment.packages if lineage.environment else {}
    now = environment(estimator).packages
    changes = {k: (before.get(k), now.get(k)) for k in set(before) | set(now) if before.get(k) != now.get(k)}
    return ReproduceReport(data_sha256, len(new), identical, max_diff, changes)


def events_sha256(events: Sequence[Event]) -> str:
    digest = hashlib.sha256()
    for event in events:
        digest.update(event.seq.to_bytes(8, "big") + len(event.data).to_bytes(8, "big") + event.data)
    return digest.hexdigest()


def reproduce_online(bundle: Bundle, events: Sequence[Event], parent: Bundle | None) -> ReproduceReport:
    """Replay an online version's range (``events``, read back from the stream) on top of ``parent`` (the
    version its lineage names; None for the first of a chain); raise ``LineageMismatchError`` unless the
    counts, the model's checksum and the reference predictions are all identical."""
    lineage = bundle.manifest.lineage
    stream = stream_lineage(lineage)
    if stream is None or lineage.spec is None:
        raise SpecError(f"{bundle.name} v{bundle.version} was not learnt online: its lineage has no stream range")
    if (parent.version if parent else None) != stream.parent_version:
        raise SpecError(f"{bundle.name} v{bundle.version} continued from v{stream.parent_version}; "
                        f"got {'v' + str(parent.version) if parent else 'no parent'}")
    base_dir = Path(lineage.spec_dir) if lineage.spec_dir else None
    spec = parse_spec(lineage.spec, base_dir=base_dir, origin=f"{bundle.name} v{bundle.version} manifest")
    learner = OnlineLearner(spec, copy.deepcopy(parent.pipeline_) if parent else None)
    consumed = 0
    while consumed < len(events):
        n, _ = learner.feed(events[consumed:])
        consumed += n
        if learner.due and consumed < len(events):
            raise LineageMismatchError(f"replaying {bundle.name} v{bundle.version}: the range was due at sequence "
                                       f"{events[consumed - 1].seq}, before its recorded end {stream.last_seq}")
    cut = learner.cut()
    where = f"replaying sequences {stream.first_seq}..{stream.last_seq} of {stream.subject}"
    if cut is None:
        raise LineageMismatchError(f"{where}: {len(events)} events are too few to cut a version")
    recorded = (stream.first_seq, stream.last_seq, stream.learnt, stream.held_out, stream.dead_lettered)
    replayed = (cut.first_seq, cut.last_seq, cut.learnt, cut.held_out, cut.dead_lettered)
    if recorded != replayed:
        raise LineageMismatchError(f"{where}: (first, last, learnt, held out, dead-lettered) = {replayed}, "
                                   f"recorded {recorded}", recorded=str(recorded), actual=str(replayed))
    with tempfile.TemporaryDirectory(prefix="modelyard-reproduce-") as tmp:
        joblib.dump(cut.pipeline, Path(tmp) / MODEL_FILE)
        model_sha = sha256_file(Path(tmp) / MODEL_FILE)
    report = _compare(bundle, cut.pipeline, events_sha256(events), spec.model.estimator)
    report.model_sha256 = model_sha
    if model_sha != bundle.manifest.files.get(MODEL_FILE) or not report.identical:
        raise LineageMismatchError(
            f"{where}: the rebuilt model differs from {bundle.name} v{bundle.version} (model.joblib "
            f"{model_sha[:12]}... vs {str(bundle.manifest.files.get(MODEL_FILE))[:12]}..., max prediction "
            f"difference {report.max_abs_diff:.6g} over {report.rows_compared} reference rows)",
            report=report.__dict__)
    return report

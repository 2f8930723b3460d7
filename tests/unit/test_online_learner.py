"""``OnlineLearner`` without a broker: ranges cut exactly, fetch sizes that do not matter, bad events named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import SpecError
from modelyard.pipeline import load_spec, parse_spec
from modelyard.pipeline.online import Cut, Event, OnlineLearner

SPEC: dict[str, Any] = {
    "name": "m",
    "data": {"source": "nats://127.0.0.1:4222", "target": "y"},
    "features": {"numeric": ["a", "b"], "categorical": ["c"]},
    "model": {"estimator": "sklearn.linear_model.SGDRegressor"},
    "training": {"mode": "online", "warmup": 50, "batch_size": 100, "publish_every": 300, "holdout_every": 5},
}


def spec_with(**changes: Any) -> Any:
    data = json.loads(json.dumps(SPEC))
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    return parse_spec(data)


def events(n: int, *, seed: int = 0, label: Any = None) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.normal(), rng.normal()
        y = label(i) if label else 3 * a - 2 * b + rng.normal(0, 0.1)
        row = {"a": a, "b": None if i % 17 == 0 else b, "c": ["x", "y", "z"][i % 3], "y": y}
        out.append(Event(i + 1, f"e{i + 1}", json.dumps(row).encode()))
    return out


def run(learner: OnlineLearner, items: list[Event], fetch: int) -> list[Cut]:
    cuts, i = [], 0
    while i < len(items):
        n, _ = learner.feed(items[i:i + fetch])
        i += n
        if learner.due:
            cut = learner.cut()
            assert cut is not None
            cuts.append(cut)
    return cuts


def test_ranges_end_exactly_at_publish_every_and_fetch_sizes_do_not_change_the_model() -> None:
    items = events(700)
    by_37 = run(OnlineLearner(spec_with()), items, 37)
    by_500 = run(OnlineLearner(spec_with()), items, 500)
    assert [(c.first_seq, c.last_seq) for c in by_37] == [(1, 300), (301, 600)]
    assert [(c.first_seq, c.last_seq) for c in by_500] == [(1, 300), (301, 600)]
    for a, b in zip(by_37, by_500, strict=True):
        assert (a.learnt, a.held_out) == (b.learnt, b.held_out) == (240, 60)  # every 5th sequence held out
        model_a, model_b = a.pipeline.steps[-1][1], b.pipeline.steps[-1][1]
        assert np.array_equal(model_a.coef_, model_b.coef_) and model_a.intercept_ == model_b.intercept_
    assert by_37[-1].metrics["r2"] > 0.9


def test_bad_events_are_rejected_with_a_reason_and_counted_in_their_range() -> None:
    items = events(400)
    bad = [b"{", b"[1]", json.dumps({"a": 1, "b": 2, "c": "x"}).encode(),
           json.dumps({"a": "big", "b": 2, "c": "x", "y": 1}).encode(),
           json.dumps({"a": 1, "b": 2, "c": "x", "y": True}).encode(),
           json.dumps({"b": 2, "c": "x", "y": 1.0}).encode()]
    for n, data in enumerate(bad):
        items.insert(20 + 30 * n, Event(0, f"bad{n}", data))
    items = [Event(i + 1, e.id, e.data) for i, e in enumerate(items)]
    learner = OnlineLearner(spec_with(training__publish_every=None))
    consumed, rejected = learner.feed(items)
    assert consumed == len(items) and learner.dead_lettered == len(bad)
    reasons = {r.event.id: r.reason for r in rejected}
    assert "not valid JSON" in reasons["bad0"] and "expected a JSON object" in reasons["bad1"]
    assert "the outcome 'y' is missing" in reasons["bad2"] and "'big' is not a number" in reasons["bad3"]
    assert "must be a finite number" in reasons["bad4"] and "missing column 'a'" in reasons["bad5"]
    cut = learner.cut()
    assert cut is not None and cut.messages == len(items) and cut.learnt + cut.held_out == 400


def test_a_classifier_declares_its_classes_and_refuses_other_labels() -> None:
    with pytest.raises(SpecError, match=r"training\.classes"):
        OnlineLearner(spec_with(model={"estimator": "sklearn.linear_model.SGDClassifier"}))
    spec = spec_with(model={"estimator": "sklearn.naive_bayes.GaussianNB"}, training__classes=["lo", "hi"])
    items = events(400, label=lambda i: "hi" if i % 2 else "lo")
    items[10] = Event(11, "odd", json.dumps({"a": 1, "b": 1, "c": "x", "y": "medium"}).encode())
    learner = OnlineLearner(spec)
    cuts = run(learner, items, 64)
    assert cuts and list(cuts[0].pipeline.classes_) == ["hi", "lo"]
    assert cuts[0].dead_lettered == 1 and {"accuracy", "f1"} <= set(cuts[0].metrics)


def test_incremental_preprocessing_keeps_the_scaler_learning_and_frozen_does_not() -> None:
    early, late = events(200, seed=1), events(200, seed=2)
    late = [Event(e.seq + 200, e.id, json.dumps({**json.loads(e.data), "a": 10.0}).encode()) for e in late]
    means = {}
    for mode in ("frozen", "incremental"):
        learner = OnlineLearner(spec_with(training__preprocessing=mode, training__publish_every=None))
        learner.feed(early + late)
        scaler = learner.pipeline.steps[0][1].named_transformers_["num"].named_steps["scale"]
        means[mode] = float(scaler.mean_[0])
    assert abs(means["frozen"]) < 0.5 and means["incremental"] > 3


def test_minibatch_kmeans_learns_without_an_outcome() -> None:
    spec = spec_with(model={"estimator": "sklearn.cluster.MiniBatchKMeans", "params": {"n_clusters": 3,
                                                                                      "n_init": 1}})
    items = [Event(e.seq, e.id, json.dumps({k: v for k, v in json.loads(e.data).items() if k != "y"}).encode())
             for e in events(600)]
    cuts = run(OnlineLearner(spec), items, 300)
    assert len(cuts) == 2 and cuts[0].dead_lettered == 0 and cuts[-1].metrics["inertia"] > 0


def test_a_version_needs_the_warm_up_and_two_held_out_events() -> None:
    learner = OnlineLearner(spec_with(training__publish_every=None))
    learner.feed(events(30))
    assert not learner.ready and learner.cut() is None


@pytest.mark.parametrize(("changes", "needle"), [
    ({"model": {"estimator": "sklearn.ensemble.RandomForestRegressor"}}, "needs an estimator with partial_fit"),
    ({"selection": {"method": "k_best", "k": 1}}, "selection.method"),
    ({"training__publish_every": 5}, "at least two held-out events"),
])
def test_an_online_spec_that_cannot_learn_online_is_one_clear_error(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        OnlineLearner(spec_with(**changes))


def test_the_example_online_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "house_prices" / "online.toml")
    assert spec.training.mode == "online" and OnlineLearner(spec).schema.names == spec.feature_names


def test_a_bad_event_in_a_batch_does_not_change_what_the_others_teach() -> None:
    """A batch with a bad event is decoded event by event, a clean one at once: the same model either way,
    and the same as with the bad event's batch fed in small pieces (the transform is done per feed)."""
    items = events(700)
    items.insert(150, Event(0, "bad", b'{"a": 1, "b": 2, "c": "x", "y": "lots"}'))
    items = [Event(i + 1, e.id, e.data) for i, e in enumerate(items)]
    by_700 = run(OnlineLearner(spec_with()), items, 700)
    by_11 = run(OnlineLearner(spec_with()), items, 11)
    assert [c.dead_lettered for c in by_700] == [c.dead_lettered for c in by_11] == [1, 0]
    for a, b in zip(by_700, by_11, strict=True):
        assert (a.first_seq, a.last_seq, a.learnt, a.held_out) == (b.first_seq, b.last_seq, b.learnt, b.held_out)
        assert a.model_bytes == b.model_bytes  # the version's model.joblib, byte for byte

"""``benchmarks/explain.py``: how long an explanation of the example HistGradientBoosting model takes.

Trains the house-price example (``examples/house_prices/spec.toml``, max_iter 100) on ``--rows`` generated
rows, then measures in-process, after one warm-up call: a one-row explanation (validate, transform, exact
TreeSHAP, per-column sums, additivity check) ``--calls`` times (p50, p95; goal p50 <= 20 ms), and one call of
1,000 rows (goal <= 2 s). It also times what publishing adds: the global importance on the reference rows
(the bundle written with and without it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))

from generate import generate  # noqa: E402

from modelyard.bundle import load_bundle  # noqa: E402
from modelyard.explain import explain_rows, explainer_for, global_importance  # noqa: E402
from modelyard.explain.backends import single_thread  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.runtime import Model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="Generated training rows.")
    parser.add_argument("--calls", type=int, default=200, help="One-row explanations timed.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame = generate(args.rows, seed=11)
        frame.to_csv(folder / "houses.csv", index=False)
        (folder / "spec.toml").write_text((ROOT / "examples" / "house_prices" / "spec.toml").read_text())
        result = train(load_spec(folder / "spec.toml"))
        t0 = time.perf_counter()
        result.write_bundle(folder / "with")
        with_importance = time.perf_counter() - t0
        model = Model(load_bundle(folder / "with"))
        t0 = time.perf_counter()
        global_importance(model)
        importance = time.perf_counter() - t0

        rows = frame.drop(columns=["price"]).to_dict("records")
        t0 = time.perf_counter()
        explainer_for(model)
        build = time.perf_counter() - t0
        explain_rows(model, rows[:1])  # warm-up
        one = []
        for i in range(args.calls):
            t0 = time.perf_counter()
            explain_rows(model, rows[i % len(rows)])
            one.append(time.perf_counter() - t0)
        frames = [model.validate(rows[i % len(rows)]) for i in range(args.calls)]
        predict = []
        with single_thread():  # the floor: scikit-learn's own predict of the same rows (transform + trees)
            for f in frames:
                t0 = time.perf_counter()
                model.pipeline_.predict(f)
                predict.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        many = explain_rows(model, rows[:1000])
        thousand = time.perf_counter() - t0
        assert all(e.additive for e in many)
    one.sort()
    p50, p95 = statistics.median(one) * 1e3, one[int(len(one) * 0.95)] * 1e3
    print(f"model: {model.manifest['estimator']} ({args.rows} training rows), explainer {many[0].explainer}")
    print(f"explainer built (first use of a version): {build * 1e3:.1f} ms")
    print(f"one row:    p50 {p50:.2f} ms, p95 {p95:.2f} ms over {args.calls} calls (goal p50 <= 20 ms)")
    floor = statistics.median(predict) * 1e3
    print(f"for scale, scikit-learn pipeline.predict of one validated row (one thread): p50 {floor:.2f} ms")
    print(f"1,000 rows: {thousand:.3f} s (goal <= 2 s), all additive")
    print(f"publish: writing the bundle took {with_importance:.2f} s, of which the global importance "
          f"~{importance:.2f} s ({model.manifest['reference']['rows']} reference rows, capped at 200)")


if __name__ == "__main__":
    main()

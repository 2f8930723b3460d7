"""What the server's per-request monitoring costs, as a ratio to validating and predicting the same request.

    python benchmarks/monitor_hooks.py [--repeat 300] [--multiprocess]

For requests of 1 to 1000 rows: the baseline is ``model.validate`` + ``model.predict_frame`` (what the server
does for a request); against it, the metric hooks the server runs (``serve.inference.observe_success``:
request counter and latency, prediction histogram, per-feature input counters), and two alternatives the
code does not use: counting inputs from the validated frame for every size, and one histogram ``observe``
per predicted row. ``--multiprocess`` measures with prometheus_client's multiprocess mode (what ``serve
--workers N`` uses), where every update writes to a memory-mapped file.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "examples" / "house_prices")]
if "--multiprocess" in sys.argv:  # before prometheus_client is imported
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelyard-bench-metrics-")
    atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

from generate import generate  # noqa: E402

from modelyard import load  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.monitor import metrics  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.serve.inference import _Result, observe_success  # noqa: E402
from modelyard.serve.routing import Routed  # noqa: E402


def per_call(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of one call over ``repeat`` calls (the machine is shared: the median is steadier)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--multiprocess", action="store_true", help="prometheus_client multiprocess mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(3000, seed=11).to_csv(folder / "houses.csv", index=False)
        spec = (ROOT / "examples" / "house_prices" / "spec.toml").read_text().replace("max_iter = 100", "max_iter = 30")
        (folder / "spec.toml").write_text(spec)
        settings = Settings(home=folder / ".modelyard")
        train(load_spec(folder / "spec.toml")).write_bundle(folder / "bundle")
        Registry(settings).publish(folder / "bundle", alias="production")
        model = load("house-prices", settings=settings)
    routed = Routed("primary", model, "house-prices", "production")
    print(f"{'rows':>5} {'predict ms':>10} {'hooks':>8} {'frame counting':>15} {'observe per row':>16}")
    for n in (1, 8, 32, 128, 300, 1000):
        frame = generate(n, seed=5, shift=0.3).drop(columns=["price"])
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        repeat = args.repeat if n < 1000 else max(args.repeat // 10, 20)
        validated = model.validate(rows)
        result = _Result(validated, model.predict_frame(validated), None)
        hist = metrics.PREDICTION_VALUE.labels("bench", "1", "primary")
        base = per_call(repeat, lambda: model.predict_frame(model.validate(rows)))  # noqa: B023
        hooks = per_call(repeat, lambda: observe_success(routed, result, rows, 0.001))  # noqa: B023
        frame_count = per_call(
            repeat,
            lambda: metrics.observe_inputs("bench", "1", validated, model.schema, None, route="primary"),  # noqa: B023
        )
        one_by_one = per_call(repeat, lambda: [hist.observe(v) for v in result.predictions.tolist()])  # noqa: B023
        print(f"{n:>5} {base * 1000:>10.2f} {hooks / base:>7.1%} {frame_count / base:>15.1%} "
              f"{one_by_one / base:>16.1%}")
    print("columns after 'predict ms': cost as a share of validate + predict for the same request")


if __name__ == "__main__":
    main()

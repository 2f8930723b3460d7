"""What one monitor evaluation costs, as a ratio to predicting the same rows (measured in the same run).

    python benchmarks/monitor_drift.py [--rows 20000]

Prints the time to turn logged records into windows and compute PSI/KS for every feature and the
predictions, and the rule verdicts, against the time the model takes to predict those rows once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "examples" / "house_prices")]

from generate import generate  # noqa: E402

from modelyard import load  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.monitor.alerts import evaluate_rules, rules_for  # noqa: E402
from modelyard.monitor.drift import evaluate_drift  # noqa: E402
from modelyard.monitor.window import split_windows  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.predlog import PredictionRecord  # noqa: E402
from modelyard.registry import Registry  # noqa: E402


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(3000, seed=11).to_csv(folder / "houses.csv", index=False)
        spec = (
            (ROOT / "examples" / "house_prices" / "spec.toml")
            .read_text()
            .replace("max_iter = 100", "max_iter = 30")
        )
        (folder / "spec.toml").write_text(spec)
        settings = Settings(home=folder / ".modelyard")
        result = train(load_spec(folder / "spec.toml"))
        result.write_bundle(folder / "bundle")
        version = Registry(settings).publish(folder / "bundle", alias="production")
        model = load("house-prices", settings=settings)
        manifest = Registry(settings).get_version("house-prices", version).manifest

        frame = generate(args.rows, seed=5, shift=0.3).drop(columns=["price"])
        predictions = model.predict(frame)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        now = datetime.now(UTC)
        records = [
            PredictionRecord(
                request_id=str(i),
                model="house-prices",
                version=version,
                inputs=rows[i : i + 10],
                outputs=[float(p) for p in predictions[i : i + 10]],
                n_rows=10,
                latency_ms=3.0,
                ts=now,
            )
            for i in range(0, len(rows), 10)
        ]
        rules = rules_for(manifest)

        def monitor() -> None:
            window = split_windows(records, "house-prices", now - timedelta(hours=1), now)[version]
            evaluate_rules(rules, window, evaluate_drift(manifest, window))

        predict = best_of(3, lambda: model.predict(frame))
        evaluate = best_of(3, monitor)
    print(f"rows: {args.rows} in {len(records)} logged requests")
    print(f"baseline, model.predict on the rows: {predict * 1000:.1f} ms")
    print(
        f"monitor evaluation (windows, PSI/KS of 16 inputs and predictions, rules): {evaluate * 1000:.1f} ms"
    )
    print(f"ratio monitor / predict: {evaluate / predict:.2f}x")


if __name__ == "__main__":
    main()

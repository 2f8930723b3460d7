"""What rollout costs, as ratios to a baseline measured in the same run.

1. Routing: ``RoutingPolicy.choose`` per request, against one single-row ``Model.predict`` (the work it
   routes). Goal: well under 1%.
2. Watching: one run of the canary rule set (``CanaryRuleSet.run``) over a window of N canary + N primary records,
   against reading the
   same records with ``predlog.list_records`` alone (the I/O it cannot avoid).

    python benchmarks/rollout.py [--records 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))

from generate import generate  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from modelyard.config import Settings  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.predlog import PredictionRecord, insert_records, list_records  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.rollout import CanaryRuleSet, RoutingPolicy, promote  # noqa: E402
from modelyard.runtime import Model  # noqa: E402


def _best_of(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(3000, seed=11).to_csv(folder / "houses.csv", index=False)
        spec = (ROOT / "examples" / "house_prices" / "spec.toml").read_text().replace("max_iter = 100",
                                                                                      "max_iter = 30")
        (folder / "spec.toml").write_text(spec)
        result = train(load_spec(folder / "spec.toml"))
        result.write_bundle(folder / "bundle")
        settings = Settings(home=folder / ".modelyard")
        registry = Registry(settings)
        v1 = registry.publish(folder / "bundle", alias="production")
        v2 = registry.publish(folder / "bundle")
        promote(registry, "house-prices", v2, to="canary", weight=0.2, force=True)
        model = Model(registry.load(f"house-prices@{v1}"))
        row = model.bundle_.reference_inputs().to_dict("records")[0]

        policy = RoutingPolicy("house-prices", registry.aliases("house-prices"))
        keys = [f"customer-{i}" for i in range(20_000)]
        with threadpool_limits(limits=1):
            predict_s = statistics.median(_best_of(lambda: model.predict(row), 3) for _ in range(20))
        choose_s = _best_of(lambda: [policy.choose(k) for k in keys]) / len(keys)
        print(f"routing: choose {choose_s * 1e6:.2f} us/request; one-row predict {predict_s * 1e3:.2f} ms "
              f"(1 thread); choose / predict = {choose_s / predict_s:.5f}")

        n = args.records
        ids = [uuid.uuid4().hex for _ in range(n)]
        recs = [PredictionRecord(request_id=i, model="house-prices", version=v1, route="primary",
                                 outputs=[100.0], latency_ms=5.0) for i in ids]
        recs += [PredictionRecord(request_id=i, model="house-prices", version=v2, route="canary",
                                  outputs=[101.0], latency_ms=6.0) for i in ids]
        insert_records(registry.engine, recs)
        watcher = CanaryRuleSet(registry)
        watch_s = _best_of(watcher.run, 3)
        def read() -> None:
            for route in ("canary", "primary"):
                list_records(registry.engine, "house-prices", route=route, limit=None)

        read_s = _best_of(read, 3)
        (health,) = watcher.run().checked
        print(f"watcher: one run over {n} canary + {n} primary records {watch_s * 1e3:.0f} ms; reading them "
              f"{read_s * 1e3:.0f} ms; watch / read = {watch_s / read_s:.2f} "
              f"(disagreement {health.disagreement:.3f}, {health.compared_rows} rows compared)")


if __name__ == "__main__":
    main()

"""From an alert firing to a promoted version, on the example house-price model (examples/house_prices).

Production is the example spec fitted on ``--rows`` generated houses; its ``input_drift`` rule names
``action = "retrain"``. Drifted traffic is logged, then the loop runs as the server's one scheduler runs it,
each rule set called directly and timed:

1. alerts: the alert rule set evaluates the window, the drift alert fires and queues a retrain;
2. retrain: the retrain rule set claims it, fits the spec again (the fit's own cost is printed apart), writes
   and publishes the bundle (global importance included), runs the differential, importance and benchmark
   gates against production, and makes the candidate the canary;
3. watcher: once the canary has answered ``--canary-requests`` requests (logged here, as a server would),
   one watcher run judges it healthy and promotes it.

The total leaves out what an operator chooses: how long traffic takes to reach the canary and
``promote_after`` (0 here). ``--repeat`` runs the loop again on a fresh registry each time.

    python benchmarks/retrain.py [--rows 5000] [--repeat 3] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "house_prices"))
sys.path.insert(0, str(ROOT))

from generate import generate  # noqa: E402
from tests.integration.monitor_helpers import log_traffic  # noqa: E402

from modelyard.checks import gate_factory  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.monitor.alerting import AlertRuleSet  # noqa: E402
from modelyard.monitor.alerts import save_overrides  # noqa: E402
from modelyard.pipeline import load_spec, train  # noqa: E402
from modelyard.predlog import window_source  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.rollout import CanaryRuleSet, RetrainRuleSet, WatchRules, set_retrain_config  # noqa: E402
from modelyard.rollout.retrain import alert_actions  # noqa: E402

MODEL = "house-prices"


def one_loop(folder: Path, rows: int, canary_requests: int, database_url: str | None) -> dict[str, float]:
    generate(rows, seed=11).to_csv(folder / "houses.csv", index=False)
    (folder / "spec.toml").write_text((ROOT / "examples" / "house_prices" / "spec.toml").read_text())
    settings = Settings(home=folder / ".modelyard", database_url=database_url)
    registry = Registry(settings)
    print("setup: fitting production", flush=True)
    train(load_spec(folder / "spec.toml")).write_bundle(folder / "bundle")
    registry.publish(folder / "bundle", alias="production", reason="benchmark: production")
    save_overrides(registry.engine, MODEL, {"input_drift": {"action": "retrain"}})
    set_retrain_config(registry, MODEL, canary_weight=0.1, promote_after=0)
    now = datetime.now(UTC)
    log_traffic(settings, f"{MODEL}@production", generate(1000, seed=21, shift=0.6), now)

    alerts = AlertRuleSet(registry, window_source(registry.engine), window=timedelta(minutes=30),
                          actions=alert_actions(registry))
    retrainer = RetrainRuleSet(registry, gate_factory(), every=1)
    watcher = CanaryRuleSet(registry, WatchRules(min_requests=min(20, canary_requests)))
    t0 = time.perf_counter()
    fired = alerts.run(now=datetime.now(UTC))
    t1 = time.perf_counter()
    assert fired.actions, f"no alert action ran: {fired.errors}"
    print(f"  alert fired and queued a retrain: {t1 - t0:.2f} s", flush=True)
    (result,) = retrainer.run(now=datetime.now(UTC)).results
    t2 = time.perf_counter()
    assert result.outcome == "canary", result.reasons
    print(f"  retrained v{result.version}, gates passed, canary: {t2 - t1:.2f} s", flush=True)
    log_traffic(settings, f"{MODEL}@canary", generate(canary_requests, seed=5), datetime.now(UTC),
                per_request=1, route="canary")
    t3 = time.perf_counter()
    watched = watcher.run(now=datetime.now(UTC) + timedelta(seconds=1))
    t4 = time.perf_counter()
    assert watched.promoted == [MODEL], (watched.checked, watched.errors)
    assert registry.aliases(MODEL)["production"].version == result.version
    cost = result.training_cost or {}
    return {"alerts": t1 - t0, "retrain": t2 - t1, "watcher": t4 - t3, "total": (t2 - t0) + (t4 - t3),
            "fit_wall": float(cost.get("wall_seconds") or 0.0), "fit_cpu": float(cost.get("cpu_seconds") or 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="training rows of the example model")
    parser.add_argument("--canary-requests", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL registry (default: SQLite)")
    args = parser.parse_args()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="modelyard-bench-retrain-") as tmp:
            figures = one_loop(Path(tmp), args.rows, args.canary_requests, args.database_url)
        runs.append(figures)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"alert → promoted (median of {len(runs)}): {med['total']:.2f} s = alert evaluation "
          f"{med['alerts']:.2f} s + retrain (fit {med['fit_wall']:.2f} s wall / {med['fit_cpu']:.2f} s CPU, "
          f"bundle, publish, gates, canary) {med['retrain']:.2f} s + watcher {med['watcher']:.2f} s; "
          f"{args.rows} training rows, {args.canary_requests} canary requests, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'} registry")
    print("in a server, add the scheduler's waits: the retrain rule set runs every MODELYARD_RETRAIN_INTERVAL "
          "(10 s by default) and the watcher every MODELYARD_WATCH_INTERVAL (5 s), plus promote_after; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

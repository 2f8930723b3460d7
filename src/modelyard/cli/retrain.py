"""`modelyard retrain`: re-run a model's spec over a moving window; the candidate goes through the gates to a
canary, and the watcher decides. Once now, or on a schedule (``--every``)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.durations import format_duration, seconds
from modelyard.registry import Registry
from modelyard.registry.lease import SqlLease
from modelyard.registry.registry import default_actor

if TYPE_CHECKING:
    from modelyard.monitor.rules import RuleSet
    from modelyard.rollout import (
        RetrainResult,
    )
    from modelyard.rollout.retrain import GateFactory


def _print(result: RetrainResult) -> None:
    name, v = result.model, result.version
    window = result.window
    where = f" on {window['start']} to {window['end']}" if window else ""
    cost = result.training_cost or {}
    fit = (f" (fit {cost.get('wall_seconds')} s, {cost.get('cpu_seconds')} s CPU, "
           f"peak {cost.get('peak_memory_mb')} MiB)") if cost else ""
    if result.outcome in ("canary", "production"):
        console.print(f"[green]{name} v{v}[/] retrained{where}{fit}: gates passed, now {result.outcome}"
                      + (" (the watcher promotes it once it has served healthy)" if result.outcome == "canary"
                         else ""))
        return
    label = {"refused": f"v{v} stopped at the gates: it does not serve", "aborted": "the fit was stopped",
             "failed": "retrain failed", "skipped": "retrain skipped"}[result.outcome]
    err_console.print(f"[bold red]{name}: {label}[/]")
    for why in result.reasons:
        err_console.print(f"  {why}", highlight=False, soft_wrap=True)


@friendly
def retrain_cmd(
    name: str = typer.Argument(..., help="Model name."),
    spec: Path | None = typer.Option(None, "--spec", help="Train from this spec (default: production's lineage)."),
    window: str | None = typer.Option(None, "--window", help="Moving window of a windowed [data] query: 30d..."),
    weight: float | None = typer.Option(None, "--weight", min=0.0, max=1.0, help="Canary traffic share."),
    promote_after: str | None = typer.Option(None, "--promote-after",
                                             help="Healthy canary time before the watcher promotes: 10m..."),
    every: str | None = typer.Option(None, "--every", help="Retrain on a schedule (1d, 12h); stored in the "
                                     "model's settings, so servers' schedulers run it too. 'off' stops it."),
    foreground: bool = typer.Option(True, "--foreground/--no-foreground",
                                    help="With --every: also run the scheduler here (else only store it)."),
    max_runs: int | None = typer.Option(None, "--max-runs", help="With --every: stop after this many ticks."),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded on the events."),
    skip_benchmark: bool = typer.Option(False, "--skip-benchmark", help="Gate on the differential test only."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Retrain NAME now (or --every 1d): fit, publish the candidate, gate it against production, canary it."""
    from modelyard.checks import Tolerances, gate_factory
    from modelyard.rollout import Trigger, retrain, retrain_config, set_retrain_config
    conf = settings()
    registry = Registry(conf)
    gates: GateFactory = gate_factory(benchmark=not skip_benchmark, tolerances=Tolerances())
    values: dict[str, Any] = {"window": window, "canary_weight": weight, "spec": str(spec.resolve()) if spec else None,
              "promote_after": seconds(promote_after, what="--promote-after") if promote_after else None}
    if every is None:
        known = retrain_config(registry.model_settings(name) if name in registry.models() else None)
        config = replace(known, **{k: v for k, v in values.items() if v is not None and k != "spec"})
        trigger = Trigger(f"user:{default_actor(conf)}", reason or "manual retrain (modelyard retrain)")
        with console.status(f"retraining {name}"):
            result = retrain(registry, name, gates=gates, trigger=trigger, config=config, spec_path=spec,
                             window=window)
        if json_out:
            typer.echo(json.dumps(result.to_dict(), default=str, indent=2))
        else:
            _print(result)
        if result.outcome not in ("canary", "production"):
            raise typer.Exit(code=1)
        return
    stored = set_retrain_config(registry, name, **values,
                                every=None if every == "off" else seconds(every, what="--every"))
    if stored.every is None:
        console.print(f"{name}: scheduled retraining is off")
        return
    console.print(f"{name}: retrain every {format_duration(stored.every)}"
                  + (f" over {stored.window}" if stored.window else "") + " (stored in the model's settings)")
    if foreground:
        _run_scheduler(registry, gates, max_runs)


def _run_scheduler(registry: Registry, gates: GateFactory, max_runs: int | None) -> None:
    """The server's scheduler without the server: one lease with every server, so whichever holds it acts
    and runs all the scheduled work (retrains, the canary watcher, and the alert rules)."""
    from modelyard.monitor.alerting import AlertRuleSet
    from modelyard.monitor.scheduler import LEASE, Scheduler
    from modelyard.rollout import CanaryRuleSet, RetrainRuleSet, RetrainRun
    from modelyard.rollout.retrain import alert_actions
    from modelyard.rollout.watcher import watch_rules
    conf = registry.settings
    tick = max(conf.retrain_interval, 1.0)
    rule_sets: list[RuleSet] = [RetrainRuleSet(registry, gates, every=tick),
                                CanaryRuleSet(registry, watch_rules(conf.watch_rules),
                                              every=max(conf.watch_interval, 1.0))]
    if conf.monitor_interval > 0:
        rule_sets.append(AlertRuleSet.from_settings(conf, registry, actions=alert_actions(registry)))
    scheduler = Scheduler(SqlLease(registry.engine, LEASE, ttl=max(30.0, 3 * tick)), rule_sets)
    typer.echo(scheduler.describe(), err=True)
    runs = 0
    try:
        while max_runs is None or runs < max_runs:
            run = scheduler.run_once(due_only=True)
            runs += 1
            retrained = run.results.get(RetrainRuleSet.name)
            for result in retrained.results if isinstance(retrained, RetrainRun) else []:
                _print(result)
            if max_runs is not None and runs >= max_runs:
                break
            time.sleep(scheduler.interval)
    finally:
        scheduler.release()

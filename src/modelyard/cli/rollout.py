"""`modelyard check`, `promote`, `rollback`, `shadow report`, `watch` and `loadtest`: rolling out safely."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from modelyard.checks.results import Tolerances
from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.durations import parse_since, seconds
from modelyard.errors import GateFailedError
from modelyard.registry import Registry
from modelyard.registry.lease import SqlLease

if TYPE_CHECKING:
    from modelyard.checks import (
        GateReport,
        GateResult,
    )
    from modelyard.checks.loadtest import LoadResult
    from modelyard.monitor.rules import RuleSet

shadow_app = typer.Typer(
    rich_markup_mode=None, help="Analyse the shadow version against the primary on logged traffic.",
                         no_args_is_help=True)
_T = Tolerances()  # the defaults of the options below (checks.results is light)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app (one line in ``cli/__init__.py``)."""
    for name, fn in (("check", check_cmd), ("promote", promote_cmd), ("rollback", rollback_cmd),
                     ("watch", watch_cmd), ("loadtest", loadtest_cmd)):
        app.command(name)(fn)
    app.add_typer(shadow_app, name="shadow")


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str, indent=2))


def _tolerances(max_mean_shift: float, max_row_rel_diff: float, min_agreement: float, max_metric_drop: float,
                max_slowdown: float, allow_removed_columns: bool) -> Tolerances:
    return Tolerances(max_mean_shift=max_mean_shift, max_row_rel_diff=max_row_rel_diff,
                      min_agreement=min_agreement, max_metric_drop=max_metric_drop, max_slowdown=max_slowdown,
                      allow_removed_columns=allow_removed_columns)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_gate(gate: GateResult) -> None:
    verdict = "[green]pass[/]" if gate.passed else "[bold red]FAIL[/]"
    status = f"[yellow]skipped[/] ({gate.skipped})" if gate.skipped else verdict
    if not gate.findings:
        console.print(f"{gate.gate}: {status}")
        return
    table = Table(title=f"{gate.gate}: {gate.skipped or ''}".rstrip(": "), title_justify="left")
    for col in ("figure", "value", "limit", ""):
        table.add_column(col, justify="right" if col in ("value", "limit") else "left")
    for f in gate.findings:
        table.add_row(f.name, _fmt(f.value), _fmt(f.limit), "ok" if f.passed else "[bold red]FAIL[/]")
    console.print(table)
    console.print(f"{gate.gate}: {status}")


def _print_report(report: GateReport) -> None:
    against = f"{report.against} (v{report.current})" if report.current else report.against
    console.print(f"[bold]{report.model}[/] v{report.candidate} against {against}")
    for gate in report.gates:
        _print_gate(gate)
    if report.passed:
        console.print("[bold green]all gates passed[/]")
    else:
        for reason in report.reasons:
            err_console.print(f"[bold red]gate failed:[/] {reason}", highlight=False, soft_wrap=True)


@friendly
def check_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Candidate version."),
    against: str = typer.Option("production", "--against", help="Alias of the version to compare with."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    skip_benchmark: bool = typer.Option(False, "--skip-benchmark", help="Run the differential test only."),
    max_mean_shift: float = typer.Option(_T.max_mean_shift, help="Relative shift of the mean prediction."),
    max_row_rel_diff: float = typer.Option(_T.max_row_rel_diff, help="p95 per-row relative difference."),
    min_agreement: float = typer.Option(_T.min_agreement, help="Share of rows with the same class."),
    max_metric_drop: float = typer.Option(_T.max_metric_drop, help="Relative worsening of any metric."),
    max_slowdown: float = typer.Option(_T.max_slowdown, help="Candidate time / current time, at most."),
    allow_removed_columns: bool = typer.Option(False, help="Accept a candidate that reads fewer columns."),
    latency_calls: int = typer.Option(200, "--latency-calls", min=1, help="Benchmark: one-row calls each."),
    threads: int = typer.Option(1, "--threads", min=0, help="Benchmark: native threads, 0 = default."),
) -> None:
    """Differential and benchmark gates of NAME VERSION against an alias; exit 1 when a gate fails."""
    from modelyard.checks import BenchmarkConfig, run_gates
    tol = _tolerances(max_mean_shift, max_row_rel_diff, min_agreement, max_metric_drop, max_slowdown,
                      allow_removed_columns)
    registry = Registry(settings())
    with console.status(f"checking {name} v{version} against {against}"):
        report = run_gates(registry, name, version, against=against, tolerances=tol,
                           benchmark=not skip_benchmark,
                           bench_config=BenchmarkConfig(latency_calls=latency_calls, threads=threads or None))
    latency = _canary_latency_rule(registry, report)
    if json_out:
        _emit_json({**report.to_dict(), "canary_latency_rule": latency})
    else:
        _print_report(report)
        if latency is not None:
            if latency["fires"]:
                err_console.print(f"[bold yellow]warning:[/] as a canary, v{version} would be rolled back by the "
                                  f"watcher's latency rule: {latency['message']} (benchmark p99; the objective "
                                  "is the model's rollout setting latency_p99_ms)", highlight=False, soft_wrap=True)
            else:
                console.print(f"canary latency rule: would not fire ({latency['message']})", highlight=False)
    if not report.passed:
        if json_out:
            for reason in report.reasons:
                err_console.print(f"gate failed: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)


def _canary_latency_rule(registry: Registry, report: GateReport) -> dict[str, Any] | None:
    """What the canary watcher's latency ratio rule would say of the candidate, from the benchmark's p99s
    and the rules a server would use (MODELYARD_WATCH_RULES, then the model's settings); None without a
    benchmark."""
    from modelyard.rollout import CanaryRuleSet, latency_verdict, watch_rules
    bench = next((g for g in report.gates if g.gate == "benchmark" and not g.skipped and g.figures), None)
    if bench is None:
        return None
    rules = CanaryRuleSet(registry, watch_rules(settings().watch_rules)).rules_for(
        report.model, registry.model_settings(report.model))
    cand, cur = bench.figures["candidate"]["latency_ms_p99"], bench.figures["current"]["latency_ms_p99"]
    finding = latency_verdict(rules, report.model, cand, cur, report.candidate, report.current)
    if finding is None:
        return None
    return {"fires": bool(finding.firing), "message": finding.message, "candidate_p99_ms": cand,
            "primary_p99_ms": cur, "max_p99_ratio": rules.max_p99_ratio, "latency_p99_ms": rules.latency_p99_ms}


@friendly
def promote_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version to promote."),
    to: str = typer.Option(..., "--to", help="production, canary or shadow."),
    weight: float | None = typer.Option(None, "--weight", min=0.0, max=1.0, help="Canary traffic share."),
    force: bool = typer.Option(False, "--force", help="Skip the gates (the event records it)."),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded on the event."),
    skip_benchmark: bool = typer.Option(False, "--skip-benchmark", help="Gate on the differential test."),
    allow_removed_columns: bool = typer.Option(False, help="Accept a candidate that reads fewer columns."),
) -> None:
    """Run the gates against production, then point the alias at VERSION (an event with who and why)."""
    from modelyard.checks import run_gates
    from modelyard.rollout import promote
    registry = Registry(settings())
    tol = Tolerances(allow_removed_columns=allow_removed_columns)

    def gate() -> GateReport:
        with console.status(f"gates: {name} v{version} against production"):
            return run_gates(registry, name, version, against="production", tolerances=tol,
                             benchmark=not skip_benchmark)

    try:
        result = promote(registry, name, version, to=to, weight=weight, force=force, gate=gate, reason=reason,
                         actor=registry.settings.actor)
    except GateFailedError as exc:
        for why in exc.reasons:
            err_console.print(f"[bold red]gate failed:[/] {why}", highlight=False, soft_wrap=True)
        err_console.print(f"{name} v{version} was not promoted (use --force to skip the gates)")
        raise typer.Exit(code=1) from None
    share = f" with weight {result.weight:g}" if result.weight is not None else ""
    was = f" (was v{result.from_version})" if result.from_version else ""
    console.print(f"{name}@{to} → version {version}{share}{was}" + (" [yellow](forced)[/]" if force else ""))
    if result.details.get("canary_retired"):
        console.print(f"the canary alias of {name} was retired: v{version} is production now")


@friendly
def rollback_cmd(
    name: str = typer.Argument(..., help="Model name."),
    canary: bool = typer.Option(False, "--canary", help="Stop the canary (weight 0) instead."),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded on the event."),
) -> None:
    """Point production back at the version it served before (or stop the canary with --canary)."""
    from modelyard.rollout import rollback, stop_canary
    registry = Registry(settings())
    if canary:
        stopped = stop_canary(registry, name, reason=reason or "manual canary rollback")
        console.print(f"{name}: canary v{stopped} gets no more traffic" if stopped
                      else f"{name}: no canary with traffic; nothing to do")
        return
    result = rollback(registry, name, reason=reason)
    console.print(f"{name}@production → version {result.to_version} "
                  f"(rolled back from v{result.from_version})")


@shadow_app.command("report")
@friendly
def shadow_report_cmd(
    name: str = typer.Argument(..., help="Model name."),
    since: str | None = typer.Option(None, "--since", help="30m, 2h, 1d or an ISO time."),
    version: int | None = typer.Option(None, "--version", help="Shadow version (default: the shadow alias)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Agreement of the shadow with the primary on logged traffic (the differential test's statistics)."""
    from modelyard.checks import shadow_report
    result = shadow_report(Registry(settings()), name, since=parse_since(since) if since else None, version=version)
    if json_out:
        _emit_json(result.to_dict())
        return
    f = result.figures
    console.print(f"[bold]{name}[/] shadow v{f['shadow_version']}: {f['shadow_records']} records, "
                  f"{f.get('paired_requests', 0)} paired with the primary, "
                  f"{f.get('shadow_errors', 0)} shadow errors")
    _print_gate(result)
    stats = f.get("predictions") or {}
    if stats:
        table = Table(title="statistics", title_justify="left")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for k, v in stats.items():
            table.add_row(k, json.dumps(v) if isinstance(v, dict) else _fmt(v))
        console.print(table)


@friendly
def watch_cmd(
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    interval: str = typer.Option("5s", "--interval", "--every", help="Time between passes: 5s, 1m..."),
    max_runs: int | None = typer.Option(None, "--max-runs", help="Stop after this many passes."),
    window: str = typer.Option("5m", "--window", help="Sliding window: 300 (seconds), 5m, 1h..."),
    max_error_rate: float = typer.Option(0.05, "--max-error-rate"),
    max_disagreement: float = typer.Option(0.10, "--max-disagreement"),
    max_p99_ratio: float = typer.Option(3.0, "--max-p99-ratio", help="Canary p99 / primary p99."),
    min_requests: int = typer.Option(20, "--min-requests", help="Canary requests needed before acting."),
    alerts: bool = typer.Option(True, "--alerts/--no-alerts",
                                help="Also run the alert rules (MODELYARD_MONITOR_INTERVAL, _WINDOW, webhook)."),
) -> None:
    """Watch live canaries and roll back unhealthy ones: the server's scheduler without the server. One
    process acts among these and every server (one lease); it runs the canary rules and, unless --no-alerts,
    the alert rules, so the process holding the lease does all the scheduled work."""
    from modelyard.monitor.alerting import AlertRuleSet
    from modelyard.monitor.scheduler import LEASE, Scheduler
    from modelyard.rollout import CanaryRuleSet, WatchRules, WatchRun
    every = seconds(interval, what="--interval")
    rules = WatchRules(window=seconds(window, what="--window"), max_error_rate=max_error_rate,
                       max_disagreement=max_disagreement, max_p99_ratio=max_p99_ratio, min_requests=min_requests)
    registry = Registry(settings())
    lease = SqlLease(registry.engine, LEASE, ttl=max(30.0, 3 * every))
    rule_sets: list[RuleSet] = [CanaryRuleSet(registry, rules, every=max(every, 1e-3))]
    if alerts and settings().monitor_interval > 0:
        rule_sets.append(AlertRuleSet.from_settings(settings(), registry))
    scheduler = Scheduler(lease, rule_sets)
    typer.echo(scheduler.describe(), err=True)
    runs = 0
    try:
        while max_runs is None or runs < max_runs:
            run = scheduler.run_once(due_only=True)
            watched = run.results.get(CanaryRuleSet.name)
            checked = watched.checked if isinstance(watched, WatchRun) else []
            runs += 1
            state = "leader" if run.leader else "standby"
            figures = "; ".join(f"{h.model} v{h.canary_version}: {h.requests} req, errors "
                                f"{_fmt(h.error_rate)}, disagreement {_fmt(h.disagreement)}"
                                for h in checked)
            typer.echo(f"run {runs} {state} {lease.holder} {figures}".rstrip())
            for model in watched.rolled_back if isinstance(watched, WatchRun) else []:
                typer.echo(f"rolled back the canary of {model}")
            if once:
                break
            time.sleep(every)
    finally:
        scheduler.release()


def _print_load(result: LoadResult, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("concurrency", "requests", "ok", "failed", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    lat = result.latency_ms
    table.add_row(str(result.concurrency), str(result.requests), str(result.ok), str(result.failed),
                  f"{result.throughput_rps:.1f}", *(_fmt(lat.get(k)) for k in ("p50", "p90", "p99", "max")))
    console.print(table)
    console.print("status codes: " + (", ".join(f"{k}: {v}" for k, v in result.status_codes.items()) or "-")
                  + "; errors: " + (", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "-"))


@friendly
def loadtest_cmd(
    url: str = typer.Argument(..., help="Endpoint, e.g. http://127.0.0.1:8000/v1/models/NAME/predict."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight."),
    duration: float = typer.Option(10.0, "--duration", min=0.1, help="Seconds (per step with --stress)."),
    rows_file: Path | None = typer.Option(None, "--rows-file", help="CSV/Parquet/JSON rows to POST."),
    batch: int = typer.Option(1, "--batch", min=1, help="Rows per request."),
    max_requests: int | None = typer.Option(None, "--max-requests", help="Stop after this many requests."),
    json_out: bool = typer.Option(False, "--json"),
    stress_mode: bool = typer.Option(False, "--stress", help="Ramp concurrency until a bound breaks."),
    max_p99_ms: float = typer.Option(500.0, "--max-p99-ms", help="Stress bound on p99 latency."),
    max_error_rate: float = typer.Option(0.01, "--max-error-rate", help="Stress bound on failed requests."),
    max_concurrency: int = typer.Option(256, "--max-concurrency", help="Stress: highest step."),
) -> None:
    """Throughput, latency percentiles, status codes and errors of an HTTP endpoint under load."""
    from modelyard.checks import LoadConfig
    from modelyard.checks.loadtest import load, read_rows, stress
    rows = read_rows(rows_file) if rows_file else None
    config = LoadConfig(url=url, concurrency=concurrency, duration=duration, rows=rows, batch=batch,
                        max_requests=max_requests)
    if stress_mode:
        result = stress(config, max_p99_ms=max_p99_ms, max_error_rate=max_error_rate, start=concurrency,
                        max_concurrency=max_concurrency)
        if json_out:
            _emit_json(result.to_dict())
            return
        for step in result.steps:
            _print_load(step, f"concurrency {step.concurrency}")
        knee = result.knee if result.knee is not None else f"below {concurrency}"
        console.print(f"knee: concurrency {knee} ({result.stopped_because})")
        return
    single = load(config)
    if json_out:
        _emit_json(single.to_dict())
        return
    _print_load(single, f"{url}: {single.duration_s:.1f} s")

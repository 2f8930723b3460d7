"""`modelyard monitor NAME` (drift, traffic and alert rules of a model) and `modelyard deploy prometheus`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from modelyard.cli._common import console, friendly, settings
from modelyard.durations import parse_duration
from modelyard.errors import BadRequestError
from modelyard.predlog import log_reader, window_source
from modelyard.registry import Registry, parse_ref


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        rule, dot, param = key.partition(".")
        if not (eq and dot and rule and param):
            raise BadRequestError(f"--set '{item}': write RULE.PARAM=VALUE, e.g. input_drift.psi=0.3")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(rule, {})[param] = value
    return out


@friendly
def monitor_cmd(
    name: str = typer.Argument(..., help="Model name."),
    window: str = typer.Option("1h", "--window", help="How much logged traffic to look at: 15m, 1h, 2d..."),
    version: list[int] = typer.Option(
        [],
        "--version",
        help="Only these versions (default: aliased ones and any with traffic in the window).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html: Path | None = typer.Option(
        None, "--html", help="Also write an HTML report with charts to this file."
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a rule for this model, stored in the registry: "
        "RULE.PARAM=VALUE (e.g. input_drift.psi=0.3, latency.p95_ms=200).",
    ),
) -> None:
    """Drift of inputs and predictions against the training reference, traffic, and the rules' verdicts."""
    from modelyard.monitor.alerts import save_overrides
    from modelyard.monitor.report import build_report, print_report, render_html

    registry = Registry(settings())
    model, _ = parse_ref(name)
    if set_:
        rules = save_overrides(registry.engine, model, _parse_set(set_))
        if not json_out:
            console.print(f"{model}: rule overrides now {json.dumps(rules)}")
    report = build_report(
        registry, window_source(log_reader(registry.settings, registry.engine)), model,
        window=parse_duration(window, what="--window"),
        versions=set(version) or None,
    )
    if html is not None:
        html.write_text(render_html(report))
    if json_out:
        console.print_json(json.dumps(report, default=str))
        return
    print_report(report, console)
    if html is not None:
        console.print(f"wrote {html}")


@friendly
def prometheus_cmd(
    name: str = typer.Argument(..., help="NAME or NAME@ALIAS|VERSION whose thresholds to use (production)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the files into."),
    target: list[str] = typer.Option(["127.0.0.1:8000"], "--target", help="host:port of `modelyard serve`."),
    webhook: str | None = typer.Option(None, "--webhook", help="Also write alertmanager.yml sending here."),
    alertmanager: str | None = typer.Option(None, "--alertmanager", help="host:port of Alertmanager."),
    rate_window: str = typer.Option("5m", "--rate-window", help="Range of rate() in the rules."),
) -> None:
    """Prometheus alerting rules, a scrape config and a Grafana dashboard for one model's alert rules."""
    from modelyard.deploy.prometheus import write_prometheus
    from modelyard.monitor.alerts import load_overrides, rules_for

    registry = Registry(settings())
    record = registry.resolve(name)
    model, _ = parse_ref(name)
    rules = rules_for(record.manifest, load_overrides(registry.engine, model))
    files = write_prometheus(
        out,
        model,
        rules,
        targets=target,
        webhook=webhook or settings().alert_webhook,
        alertmanager=alertmanager,
        rate_window=rate_window,
    )
    for f in files:
        console.print(f"wrote {f}")
    console.print(f"thresholds from {model} v{record.version}; check with: promtool check rules {files[0]}")

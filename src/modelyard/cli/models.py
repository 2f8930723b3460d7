"""`modelyard models`, `modelyard alias`, `modelyard events` and `modelyard import`: the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelyard.cli._common import console, friendly, settings
from modelyard.errors import BadRequestError
from modelyard.registry import AliasRecord, EventRecord, Registry, parse_ref
from modelyard.registry.events import SqlEventLog
from modelyard.registry.settings import LATENCY_OBJECTIVE, latency_objective

models_app = typer.Typer(
    rich_markup_mode=None, help="List and inspect models in the registry.", no_args_is_help=True)
alias_app = typer.Typer(
    rich_markup_mode=None, help="Point aliases (production, canary, shadow, ...) at versions.", no_args_is_help=True)
import_app = typer.Typer(
    rich_markup_mode=None, help="Bring models made elsewhere into the registry.", no_args_is_help=True)


@models_app.command("list")
@friendly
def list_models(json_out: bool = typer.Option(False, "--json")) -> None:
    """Every model with its newest version and its aliases."""
    registry = Registry(settings())
    rows: list[dict[str, Any]] = []
    for name in registry.models():
        versions = registry.versions(name)
        aliases = registry.aliases(name)
        rows.append({
            "name": name,
            "latest": versions[-1].version if versions else None,
            "versions": len(versions),
            "aliases": {a: r.version for a, r in sorted(aliases.items())},
            "weights": {a: r.weight for a, r in sorted(aliases.items()) if r.weight is not None},
        })
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="models")
    for col in ("name", "latest", "versions", "aliases"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["latest"]), str(r["versions"]),
                      ", ".join(f"{a}→v{v}{_weight(r['weights'].get(a))}" for a, v in r["aliases"].items())
                      or "-")
    console.print(table)


@models_app.command("show")
@friendly
def show_model(
    ref: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME@VERSION"),
    json_out: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """One version: schema, metrics, lineage, fast path, aliases."""
    registry = Registry(settings())
    record = registry.resolve(ref)
    m = record.manifest
    if json_out:
        console.print_json(m.to_json())
        return
    name, _ = parse_ref(ref)
    aliases = [_alias(r) for a, r in sorted(registry.aliases(name).items()) if r.version == record.version]
    lineage = m.lineage
    console.print(f"[bold]{name}[/] version [bold]{record.version}[/]  "
                  f"aliases: {', '.join(aliases) or '-'}  task: {m.task}  estimator: {m.estimator}")
    console.print(f"created {record.created_at} by {record.created_by}; archive sha256 {record.archive_sha256}")
    data = lineage.data
    if data:
        console.print(f"data: {data.location or lineage.source or '-'} rows={data.rows} "
                      f"sha256={str(data.sha256)[:16]}...")
    git = lineage.git
    if git:
        console.print(f"git: {git.commit[:12]}{' (dirty)' if git.dirty else ''}")
    env = lineage.environment
    if env:
        console.print("python " + str(env.python) + "; " + ", ".join(f"{k} {v}" for k, v in env.packages.items()))
    fast = m.fast_path
    console.print("fast path: " + (f"{fast.kind} ({fast.detail or ''})" if fast and fast.enabled
                                   else f"none, scikit-learn serves ({(fast and fast.reason) or 'not tried'})"))
    if m.training_cost is not None:
        cost = m.training_cost
        console.print(f"training cost: {cost.wall_seconds}s wall, {cost.cpu_seconds}s CPU, "
                      f"peak memory {cost.peak_memory_mb} MiB")
    metrics = Table(title="metrics (held-out)")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for k, v in m.metrics.items():
        metrics.add_row(k, f"{v:.6g}")
    console.print(metrics)
    _print_importance(m.global_importance)
    schema = Table(title="input schema")
    for col in ("column", "kind", "nullable", "range / categories"):
        schema.add_column(col)
    for c in m.input_schema.columns:
        cats = c.categories or []
        rng = (f"{c.min:.4g} .. {c.max:.4g}" if c.kind == "numeric" and c.min is not None and c.max is not None
               else ", ".join(cats[:6]) + (" ..." if len(cats) > 6 else ""))
        schema.add_row(c.name, c.kind, "yes" if c.nullable else "no", rng)
    console.print(schema)


def _print_importance(importance: dict[str, float] | None) -> None:
    """The version's global importance (mean |attribution| per input column), as shares with a bar."""
    if not importance:
        console.print("global importance: none (published without shap, or before modelyard computed it)")
        return
    total = sum(importance.values()) or 1.0
    table = Table(title="global importance (mean |attribution| on reference rows)")
    for col, justify in (("column", "left"), ("mean |attribution|", "right"), ("share", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for column, value in sorted(importance.items(), key=lambda kv: -kv[1]):
        share = value / total
        table.add_row(column, f"{value:.4g}", f"{share:.1%}", "█" * round(share * 40))
    console.print(table)


def _weight(weight: float | None) -> str:
    """A canary's share as shown next to its alias: a rolled-back canary (weight 0) says it gets nothing."""
    if weight is None:
        return ""
    return f" ({weight:.0%}, no traffic)" if weight == 0 else f" ({weight:.0%})"


def _alias(r: AliasRecord) -> str:
    return r.alias + _weight(r.weight)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested details as (dotted key, value) rows: the figures stored with an event."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, float):
        return [(prefix, f"{value:.6g}")]
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return [(prefix, "; ".join(map(str, value)) or "-")]
    if isinstance(value, list):
        rows = []
        for i, v in enumerate(value):
            rows += _flatten(v, f"{prefix}[{i}]")
        return rows
    return [(prefix, "-" if value is None else str(value))]


def _print_event_details(e: EventRecord) -> None:
    console.print(f"[bold]event {e.id}[/] {e.at:%Y-%m-%d %H:%M:%S} {e.model} {e.kind}"
                  f"{' ' + e.alias if e.alias else ''}: "
                  f"{'v' + str(e.from_version) + ' → ' if e.from_version else ''}"
                  f"{'v' + str(e.to_version) if e.to_version else ''} by {e.actor or '-'}", highlight=False)
    if e.reason:
        console.print(f"why: {e.reason}", highlight=False, soft_wrap=True)
    rows = _flatten(e.details or {})
    if not rows:
        console.print("no figures stored with this event")
        return
    table = Table(title=f"figures of event {e.id}", title_justify="left")
    table.add_column("figure", overflow="fold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@models_app.command("events")
@friendly
def events(
    name: str = typer.Argument(None, help="Model name (default: every model)."),
    limit: int = typer.Option(30, "--limit", help="Newest events shown."),
    details: bool = typer.Option(False, "--details", help="Also show the figures stored with each event."),
    json_out: bool = typer.Option(False, "--json", help="Print the events, with their figures, as JSON."),
) -> None:
    """Every publish and alias change: when, who, why (and with --details, the figures; see also
    `models event ID`)."""
    registry = Registry(settings())
    found = registry.events(name, limit=limit)
    if json_out:
        console.print_json(json.dumps([{**vars(e), "at": e.at.isoformat()} for e in found], default=str))
        return
    if details:
        for e in found:
            _print_event_details(e)
        return
    table = Table(title="events")
    for col in ("id", "at", "model", "kind", "alias", "from", "to", "actor", "reason"):
        table.add_column(col)
    for e in found:
        table.add_row(str(e.id), e.at.strftime("%Y-%m-%d %H:%M:%S"), e.model, e.kind, e.alias or "",
                      str(e.from_version or ""), str(e.to_version or ""), e.actor or "", e.reason or "")
    console.print(table)


@models_app.command("event")
@friendly
def event(event_id: int = typer.Argument(..., help="The event's id (first column of `models events`).")) -> None:
    """One event with every figure stored with it (a rollback's canary figures, a refusal's gates)."""
    found = SqlEventLog(Registry(settings()).engine).get(event_id)
    if found is None:
        raise BadRequestError(f"no event with id {event_id}")
    _print_event_details(found)


@models_app.command("objective")
@friendly
def objective(
    name: str = typer.Argument(..., help="Model name."),
    latency_p99_ms: float | None = typer.Option(None, "--latency-p99-ms", min=0.0,
                                                help="p99 latency objective in ms (the canary latency rule "
                                                     "fires only above it)."),
    clear: bool = typer.Option(False, "--clear", help="Remove the model's own objective."),
) -> None:
    """Show or set the model's latency objective (its rollout setting latency_p99_ms)."""
    registry = Registry(settings())
    if clear or latency_p99_ms is not None:
        registry.update_model_settings(name, "rollout", {LATENCY_OBJECTIVE: None if clear else latency_p99_ms})
    own = latency_objective(registry.model_settings(name))
    console.print(f"{name}: p99 latency objective " + (f"{own:g} ms" if own is not None else
                  "not set (the server's MODELYARD_WATCH_RULES latency_p99_ms applies)"), highlight=False)


@alias_app.command("set")
@friendly
def alias_set(
    name: str, version: int, alias: str,
    reason: str | None = typer.Option(None, "--reason"),
    weight: float | None = typer.Option(None, "--weight", min=0.0, max=1.0, help="Traffic share (canary)."),
) -> None:
    """Point ALIAS of NAME at VERSION (recorded as an event)."""
    Registry(settings()).set_alias(name, alias, version, weight=weight, reason=reason)
    console.print(f"{name}@{alias} → version {version}")


@alias_app.command("remove")
@friendly
def alias_remove(name: str, alias: str, reason: str | None = typer.Option(None, "--reason")) -> None:
    """Remove ALIAS from NAME (recorded as an event)."""
    Registry(settings()).remove_alias(name, alias, reason=reason)
    console.print(f"{name}@{alias} removed")


@import_app.command("mlflow")
@friendly
def import_mlflow_cmd(
    path: Path = typer.Argument(..., help="An MLflow model folder (with MLmodel) of the sklearn flavor."),
    name: str = typer.Option(..., "--name", help="Model name in the registry."),
    data: str | None = typer.Option(None, "--data", help="CSV/Parquet rows for schema and reference set."),
    target: str | None = typer.Option(None, "--target", help="Target column in --data, if present."),
    alias: str | None = typer.Option(None, "--alias"),
) -> None:
    """Import an MLflow scikit-learn model as a new version."""
    from modelyard.mlflow_import import import_mlflow

    version = import_mlflow(path, name=name, data=data, target=target, alias=alias, settings=settings())
    console.print(f"imported {path} as [bold]{name}[/] version [bold]{version}[/]")

"""`modelyard predictions list|show` and `modelyard replay`: explain a prediction from the past."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from modelyard.cli._common import console, friendly, settings
from modelyard.predlog import find_request, log_reader, parse_since, recent, replay
from modelyard.registry import Registry

predictions_app = typer.Typer(rich_markup_mode=None, help="Read the prediction log.", no_args_is_help=True)


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


@predictions_app.command("list")
@friendly
def list_cmd(
    name: str = typer.Argument(..., help="Model name."),
    since: str | None = typer.Option(None, "--since", help="A duration (30m, 2h, 7d) or an ISO date/time."),
    route: str | None = typer.Option(None, "--route", help="primary, canary, shadow, batch or stream."),
    limit: int = typer.Option(50, "--limit", min=1),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The newest predictions of a model, newest first."""
    registry = Registry(settings())
    start = parse_since(since) if since else None
    records = recent(log_reader(registry.settings, registry.engine), name, since=start, route=route,
                     limit=limit)
    if json_out:
        console.print_json(json.dumps([r.to_json() for r in records], default=str))
        return
    table = Table(title=f"{name}: {len(records)} newest predictions" + (f" since {since}" if since else ""))
    for col in ("time (UTC)", "request id", "version", "route", "rows", "ms", "outputs / error"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(r.ts.strftime("%Y-%m-%d %H:%M:%S"), r.request_id, str(r.version), r.route,
                      str(r.n_rows), f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-",
                      f"[red]{r.error}[/]" if r.error else _short(r.outputs))
    console.print(table)


@predictions_app.command("show")
@friendly
def show_cmd(
    request_id: str = typer.Argument(..., help="The request id (X-Request-ID, or the server's)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Every record of one request: version, inputs, outputs, latency, error."""
    registry = Registry(settings())
    records = find_request(log_reader(registry.settings, registry.engine), request_id)
    if json_out:
        console.print_json(json.dumps([r.to_json() for r in records], default=str))
        return
    for r in records:
        latency = f", {r.latency_ms:.2f} ms" if r.latency_ms is not None else ""
        console.print(f"[bold]{r.request_id}[/] route [bold]{r.route}[/]: {r.model} v{r.version} at "
                      f"{r.ts.isoformat()}, {r.n_rows} rows{latency}", highlight=False)
        if r.error:
            console.print(f"  [red]error[/]: {r.error}", highlight=False)
        console.print(f"  meta: {json.dumps(r.meta, default=str)}", highlight=False, soft_wrap=True)
        table = Table(show_header=True)
        table.add_column("row", justify="right")
        table.add_column("inputs", overflow="fold")
        table.add_column("output", overflow="fold")
        outputs = r.outputs if isinstance(r.outputs, list) else [None] * len(r.inputs or [])
        for i, row in enumerate(r.inputs or []):
            out = outputs[i] if i < len(outputs) else None
            table.add_row(str(i), json.dumps(row, default=str), json.dumps(out, default=str))
        console.print(table)


@friendly
def replay_cmd(
    request_id: str = typer.Argument(..., help="The request id to recompute."),
    route: str = typer.Option("primary", "--route", help="Which record of the request to replay."),
    rtol: float = typer.Option(1e-9, "--rtol", help="Relative tolerance for numeric outputs."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Recompute a logged prediction with the exact version that made it; exit 1 if the output differs."""
    registry = Registry(settings())
    records = [r for r in find_request(log_reader(registry.settings, registry.engine), request_id)
               if r.route == route]
    if not records:
        from modelyard.errors import NotFoundError

        raise NotFoundError(f"request '{request_id}' has no record on route '{route}'")
    result = replay(registry, records[0], rtol=rtol)
    if json_out:
        console.print_json(json.dumps({
            "request_id": request_id, "model": result.record.model, "version": result.record.version,
            "matches": result.matches, "stored": result.stored, "replayed": result.replayed,
            "max_abs_diff": result.max_abs_diff,
            "differences": [d.__dict__ for d in result.differences],
        }, default=str))
    else:
        colour = "[green]" if result.matches else "[bold red]"
        console.print(colour + result.summary + "[/]", highlight=False)
        if result.differences:
            table = Table(title="rows that differ")
            for col in ("row", "logged", "recomputed", "|difference|"):
                table.add_column(col, justify="right")
            for d in result.differences[:50]:
                table.add_row(str(d.row), json.dumps(d.stored, default=str),
                              json.dumps(d.replayed, default=str),
                              f"{d.abs_diff:.6g}" if d.abs_diff is not None else "-")
            console.print(table)
            if len(result.differences) > 50:
                console.print(f"... and {len(result.differences) - 50} more rows")
    if not result.matches:
        raise typer.Exit(code=1)

"""`modelyard fleet`: what runs where, from the heartbeats every server, stream consumer and batch run writes."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from modelyard.cli._common import console, friendly, settings
from modelyard.durations import parse_duration
from modelyard.monitor.fleet import read_fleet
from modelyard.registry import Registry


def _serving(entries: list[dict[str, Any]]) -> str:
    out = []
    for s in entries:
        weight = s.get("weight")
        share = f" ({weight:.0%})" if s.get("alias") == "canary" and weight is not None else ""
        out.append(f"{s['model']}@{s.get('alias') or '-'} v{s['version']}{share}")
    return ", ".join(out) or "-"


def _state(row: dict[str, Any]) -> str:
    if row["status"] != "running":
        return str(row["status"])
    return "[bold red]stale[/]" if row["stale"] else "[green]live[/]"


@friendly
def fleet_cmd(
    since: str = typer.Option("1h", "--since", help="Instances seen in this window: 15m, 1h, 1d."),
    json_out: bool = typer.Option(False, "--json", help="Print the fleet as JSON (GET /v1/fleet's body)."),
) -> None:
    """Every server process, stream consumer and batch run by region: what it serves, when it was last
    seen (stale after three missed heartbeats), and any version skew of an alias."""
    view = read_fleet(Registry(settings()), since=parse_duration(since, what="--since"))
    if json_out:
        typer.echo(json.dumps(view, indent=2, default=str))
        return
    table = Table(title=f"fleet: {view['live']} live, {view['stale']} stale", title_justify="left")
    for col in ("region", "zone", "kind", "host", "pid", "serving", "started", "last seen", "state"):
        table.add_column(col, overflow="fold")
    for row in view["instances"]:
        table.add_row(row["region"] or "-", row["zone"] or "-", row["kind"], row["host"], str(row["pid"]),
                      _serving(row["serving"]), row["started_at"][:19].replace("T", " "),
                      f"{row['age_seconds']:.0f}s ago", _state(row))
    console.print(table)
    if view["grid"]:
        grid = Table(title="regions x models x versions (live instances)", title_justify="left")
        for col in ("region", "model", "alias", "version", "instances"):
            grid.add_column(col)
        for cell in view["grid"]:
            grid.add_row(cell["region"], cell["model"], cell["alias"], f"v{cell['version']}",
                         f"{cell['instances']} ({', '.join(cell['kinds'])})")
        console.print(grid)
    for skew in view["skew"]:
        console.print(f"[bold red]version skew:[/] {skew['message']}", highlight=False)
    if not view["instances"]:
        console.print(f"no instance has sent a heartbeat in the last {since}")

"""`modelyard log status|ship`: the prediction log's write-ahead segments on this machine."""

from __future__ import annotations

import json

import typer

from modelyard.cli._common import console, friendly, settings
from modelyard.predlog import segments
from modelyard.predlog.shipper import Shipper

log_app = typer.Typer(rich_markup_mode=None, help="The prediction log's write-ahead segments (local to this machine).",
                      no_args_is_help=True)


@log_app.command("status")
@friendly
def status_cmd(json_out: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Segments and records waiting for the database, the oldest record's age, the last ship error."""
    cfg = settings()
    backlog = segments.backlog(cfg.resolved_spill_dir)
    body = {**backlog.to_dict(), "durability": cfg.log_durability, "on_failure": cfg.log_on_failure}
    if json_out:
        console.print_json(json.dumps(body))
        return
    age = backlog.oldest_age_seconds
    console.print(f"folder       {backlog.folder}\n"
                  f"durability   {cfg.log_durability} (on failure: {cfg.log_on_failure})\n"
                  f"segments     {backlog.segments}\n"
                  f"records      {backlog.records} waiting for the database\n"
                  f"oldest       {'-' if age is None else f'{age:.1f}s ago'}", highlight=False)
    error = backlog.last_ship_error
    console.print(f"last error   {error['message']} (at {error['at']})" if error else "last error   none",
                  highlight=False)


@log_app.command("ship")
@friendly
def ship_cmd() -> None:
    """Ship every segment no live process holds into the database now (a server does this by itself)."""
    cfg = settings()
    shipper = Shipper(cfg.resolved_database_url, cfg.resolved_spill_dir, batch_size=cfg.log_batch_size)
    try:
        shipped = shipper.ship_folder()
    finally:
        shipper.dispose()
    left = segments.backlog(cfg.resolved_spill_dir)
    console.print(f"shipped {shipped} records; {left.records} records in {left.segments} segments left"
                  + (f" (database: {shipper.last_error})" if shipper.last_error else ""), highlight=False)
    if shipper.last_error:
        raise typer.Exit(1)

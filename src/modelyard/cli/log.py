"""`modelyard log status|ship|prune`: the prediction log's write-ahead segments on this machine, and its
Parquet store's retention."""

from __future__ import annotations

import json

import typer

from modelyard.cli._common import console, friendly, settings
from modelyard.durations import parse_duration
from modelyard.errors import ConfigError
from modelyard.predlog import LogTarget, log_sink, segments
from modelyard.predlog.parquet import prune
from modelyard.predlog.shipper import Shipper
from modelyard.predlog.target import log_retention

log_app = typer.Typer(rich_markup_mode=None, help="The prediction log's write-ahead segments (local to this machine).",
                      no_args_is_help=True)


@log_app.command("status")
@friendly
def status_cmd(json_out: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Segments and records waiting for the log store, the oldest record's age, the last ship error."""
    cfg = settings()
    backlog = segments.backlog(cfg.resolved_spill_dir)
    target = (f"parquet ({cfg.resolved_log_parquet_root})" if LogTarget(cfg.log_target) is LogTarget.PARQUET
              else "sql (the registry database)")
    body = {**backlog.to_dict(), "durability": cfg.log_durability, "on_failure": cfg.log_on_failure,
            "target": cfg.log_target}
    if json_out:
        console.print_json(json.dumps(body))
        return
    age = backlog.oldest_age_seconds
    store = "database" if LogTarget(cfg.log_target) is LogTarget.SQL else "store"
    console.print(f"folder       {backlog.folder}\n"
                  f"target       {target}\n"
                  f"durability   {cfg.log_durability} (on failure: {cfg.log_on_failure})\n"
                  f"segments     {backlog.segments}\n"
                  f"records      {backlog.records} waiting for the {store}\n"
                  f"oldest       {'-' if age is None else f'{age:.1f}s ago'}", highlight=False)
    error = backlog.last_ship_error
    console.print(f"last error   {error['message']} (at {error['at']})" if error else "last error   none",
                  highlight=False)


@log_app.command("ship")
@friendly
def ship_cmd() -> None:
    """Ship every segment no live process holds into the log store now (a server does this by itself)."""
    cfg = settings()
    shipper = Shipper(cfg.resolved_database_url, cfg.resolved_spill_dir, sink=log_sink(cfg))
    try:
        shipped = shipper.ship_folder()
    finally:
        shipper.dispose()
    left = segments.backlog(cfg.resolved_spill_dir)
    console.print(f"shipped {shipped} records; {left.records} records in {left.segments} segments left"
                  + (f" ({shipper.sink.name}: {shipper.last_error})" if shipper.last_error else ""),
                  highlight=False)
    if shipper.last_error:
        raise typer.Exit(1)


@log_app.command("prune")
@friendly
def prune_cmd(
    older_than: str | None = typer.Option(None, "--older-than", help="A duration (30d, 2w); default "
                                          "MODELYARD_LOG_RETENTION."),
    json_out: bool = typer.Option(False, "--json", help="The deleted partitions as JSON."),
) -> None:
    """Delete the Parquet log's days that ended longer ago than the retention (the shipper does it too)."""
    cfg = settings()
    if LogTarget(cfg.log_target) is not LogTarget.PARQUET:
        raise ConfigError("modelyard log prune deletes Parquet partitions: it needs MODELYARD_LOG_TARGET=parquet "
                          "(the SQL log's retention is the database's)")
    retention = parse_duration(older_than, what="--older-than") if older_than else log_retention(cfg)
    if retention is None:
        raise ConfigError("no retention: set MODELYARD_LOG_RETENTION (e.g. 30d) or pass --older-than")
    removed = prune(cfg.resolved_log_parquet_root, retention)
    root = cfg.resolved_log_parquet_root
    if json_out:
        console.print_json(json.dumps({"root": str(root), "removed": [str(p.relative_to(root)) for p in removed]}))
        return
    for path in removed:
        console.print(f"removed {path.relative_to(root)}", highlight=False)
    console.print(f"{len(removed)} partitions older than {older_than or cfg.log_retention} removed from {root}",
                  highlight=False)

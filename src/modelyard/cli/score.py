"""`modelyard score`: pattern 2, a query (or file) scored into a table of the shared database."""

from __future__ import annotations

import json

import typer
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.registry import parse_ref


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} rows/s", style="progress.data.speed")


@friendly
def score_cmd(
    ref: str = typer.Argument(..., metavar="NAME[@ALIAS]", help="NAME, NAME@ALIAS or NAME@VERSION."),
    source: str = typer.Option(..., "--from", help="A SELECT query, a table name, or a .csv/.parquet file "
                               "(with --engine spark and a Parquet --to: a Parquet file, directory, glob or URI)."),
    target: str = typer.Option(..., "--to", help="Output table (created when missing); with --engine spark "
                               "also PATH.parquet, PATH/ or a URI: Parquet written by Spark."),
    db: str | None = typer.Option(None, "--db", help="Database of input and output (default: registry's)."),
    key: str | None = typer.Option(None, "--key", help="Unique key column, kept under its own name "
                                   "(default: the row's position, in a column 'key')."),
    keep: str | None = typer.Option(None, "--keep", metavar="COLUMNS",
                                    help="Input columns to carry into the output, comma-separated."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", min=1,
                                          help="Rows per chunk (default 20,000; 100,000 with --engine spark)."),
    run_id: str | None = typer.Option(None, "--run-id", help="Resume this run (or name a new one)."),
    cluster: str | None = typer.Option(None, "--cluster", help="Score chunks on a Dask scheduler tcp://HOST:PORT "
                                       "(with --engine spark: the Spark master, default local[*])."),
    engine: str | None = typer.Option(None, "--engine", metavar="local|dask|spark",
                                      help="Where chunks are scored (default: dask with --cluster, else local)."),
    log_rows: bool = typer.Option(False, "--log-rows", help="Also log every row in the prediction log."),
    threads: int = typer.Option(1, "--threads", min=0, help="OpenMP threads per prediction (0: default)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score the rows of --from with the model and write (key, kept columns, prediction, model, version,
    run_id) to --to."""
    from modelyard.batch import score
    from modelyard.batch.runner import new_run_id
    name, _ = parse_ref(ref)
    run_id = run_id or new_run_id(name)
    err_console.print(f"run [bold]{run_id}[/] (rerun with --run-id {run_id} to resume)", highlight=False)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/"
               "{task.fields[total_text]} rows"), _RowsPerSecond(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, disable=quiet or json_out, transient=False) as bar:
        task = bar.add_task(name, total=None, total_text="?")

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total,
                       total_text=f"{total:,}" if total is not None else "?")

        result = score(ref, source=source, target=target, settings=settings(), db=db, key=key,
                       chunk_size=chunk_size or (100_000 if engine == "spark" else 20_000), run_id=run_id,
                       cluster=cluster, log_rows=log_rows, engine=engine,
                       progress=progress, threads=threads or None,
                       keep=tuple(c.strip() for c in (keep or "").split(",") if c.strip()))
    if json_out:
        console.print_json(json.dumps({
            "run_id": result.run_id, "model": result.model, "version": result.version, "table": result.table,
            "rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected,
            "row_count": result.row_count, "seconds": round(result.seconds, 3), "status": result.status,
            "resumed": result.resumed, "already_done": result.already_done,
        }))
        return
    if result.already_done:
        console.print(f"run {result.run_id} was already complete: "
                      f"{result.rows_scored:,} rows in {result.table}")
        return
    rejected = (f", {result.rows_rejected:,} rejected (see {result.table}_rejected)" if result.rows_rejected
                else "")
    console.print(f"scored {result.rows_scored:,} rows into [bold]{result.table}[/] with {result.model} "
                  f"v{result.version}{rejected} in {result.seconds:.1f}s "
                  f"({result.rows_per_second:,.0f} rows/s){' (resumed)' if result.resumed else ''}")

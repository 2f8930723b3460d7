"""`modelyard feedback NAME --from SQL|TABLE|FILE --key COLUMN --actual COLUMN`: outcomes that land later."""

from __future__ import annotations

import json

import typer

from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.durations import parse_duration


@friendly
def feedback_cmd(
    name: str = typer.Argument(..., help="Model name."),
    source: str = typer.Option(..., "--from", help="A SELECT query, a table name, or a .csv/.parquet file."),
    key: str = typer.Option(..., "--key", help="Column naming each outcome's prediction: an input column of "
                            "the logged rows (entity key), or see --request-ids / --batch-run."),
    actual: str = typer.Option(..., "--actual", help="Column holding the true value."),
    db: str | None = typer.Option(None, "--db", help="Database of the source (default: registry's)."),
    at: str | None = typer.Option(None, "--at", help="Column: when each outcome was observed (default now)."),
    window: str = typer.Option("7d", "--window", help="Entity keys: how far before --at to look for the "
                               "prediction."),
    request_ids: bool = typer.Option(False, "--request-ids", help="--key holds request ids."),
    row: str | None = typer.Option(None, "--row", help="With --request-ids: column of the row in the request."),
    batch_run: str | None = typer.Option(None, "--batch-run", help="--key holds the keys of this "
                                         "`modelyard score` run."),
    late_after: str = typer.Option("1d", "--late-after", help="Count outcomes arriving later than this as late."),
    chunk_size: int = typer.Option(50_000, "--chunk-size", min=1, help="Rows per chunk."),
    run_id: str | None = typer.Option(None, "--run-id", help="Resume this run (or name a new one)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Join the outcomes of --from to the model's logged predictions (idempotent and resumable)."""
    from modelyard.batch.feedback import feed
    from modelyard.batch.runner import new_run_id
    run_id = run_id or new_run_id(f"{name}-feedback")
    if not json_out:
        err_console.print(f"run [bold]{run_id}[/] (rerun with --run-id {run_id} to resume)", highlight=False)
    done = feed(name, source=source, key=key, actual=actual, settings=settings(), db=db, at=at, row=row,
                request_ids=request_ids, batch_run=batch_run,
                window=parse_duration(window, what="--window").total_seconds(),
                late_after=parse_duration(late_after, what="--late-after").total_seconds(),
                chunk_size=chunk_size, run_id=run_id)
    r = done.result
    if json_out:
        console.print_json(json.dumps({"run_id": done.run_id, "model": done.model, "rows_read": done.rows_read,
                                       "seconds": round(done.seconds, 3), "resumed": done.resumed,
                                       "already_done": done.already_done, **r.to_dict()}))
        return
    if done.already_done:
        console.print(f"run {done.run_id} was already complete")
        return
    listed = f" (e.g. {', '.join(r.unmatched_ids[:5])})" if r.unmatched_ids else ""
    console.print(f"{done.model}: {r.received:,} outcomes read, {r.matched:,} joined to a prediction "
                  f"({r.late:,} late), {r.duplicate:,} duplicate, {r.unmatched:,} unmatched{listed} in "
                  f"{done.seconds:.1f}s ({done.rows_per_second:,.0f} rows/s)"
                  f"{' (resumed)' if done.resumed else ''}")

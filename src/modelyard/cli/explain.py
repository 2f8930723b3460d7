"""`modelyard explain REQUEST_ID`: why a logged prediction came out as it did, with the version that made it."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from modelyard.cli._common import console, err_console, friendly, settings
from modelyard.monitor.svg import waterfall_chart
from modelyard.predlog import find_request, log_reader
from modelyard.registry import Registry

if TYPE_CHECKING:
    from modelyard.explain import ExplanationDiff, OutputExplanation, RowExplanation
    from modelyard.predlog.past import PastExplanation
    from modelyard.runtime import Model

WATERFALL_COLUMNS = 15


@friendly
def explain_cmd(
    request_id: str = typer.Argument(..., help="The request id of a logged prediction."),
    row: int = typer.Option(0, "--row", min=0, help="Which row of the request."),
    route: str | None = typer.Option(None, "--route", help="Which record of the request (default: the "
                                                               "first answered: primary, then canary, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained page with a waterfall."),
    against: str | None = typer.Option(None, "--against", help="Another version (3) or alias (production): "
                                                               "the same inputs, side by side."),
) -> None:
    """Attributions per input column of a logged prediction, recomputed with the exact version that made it."""
    from modelyard.predlog.past import explain_logged, pick_record
    from modelyard.runtime import Model
    registry = Registry(settings())
    record = pick_record(find_request(log_reader(registry.settings, registry.engine), request_id), route)
    other: Model | None = None
    if against is not None:
        other = Model.load(registry.load_bundle(registry.resolve(f"{record.model}@{against}")))
    with console.status(f"explaining {record.model} v{record.version} row {row}"):
        past = explain_logged(registry, record, row=row, against=other)
    if json_out:
        typer.echo(json.dumps(past.to_json(), default=str, indent=2))
    else:
        _print(past)
    if html is not None:
        html.write_text(render_html(past))
        (err_console if json_out else console).print(f"wrote {html}")
    if not past.explanation.additive:
        err_console.print("[bold red]error:[/] the attributions do not add up to the prediction within the "
                          "tolerance shown", highlight=False)
        raise typer.Exit(code=1)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value, default=str)


def _print(past: PastExplanation) -> None:
    e = past.explanation
    console.print(f"[green]{past.replay.summary}[/]", highlight=False, soft_wrap=True)
    console.print(f"[bold]{e.model}[/] v{e.version} request {past.record.request_id} row {e.row}: prediction "
                  f"[bold]{_fmt(e.prediction)}[/]" + (f"  probabilities {e.probabilities}" if e.probabilities else ""),
                  highlight=False)
    console.print(f"explainer: {e.explainer_detail}", highlight=False, soft_wrap=True)
    for i, out in enumerate(e.outputs):
        if i > 0 and len(e.outputs) > 2:
            break  # the predicted class and the runner-up; --json has every class
        console.print(_table(e, out))
        _additivity_line(out)
    difference = past.difference
    if difference is not None:
        console.print(_diff_table(difference))
        changed = ", ".join(difference.changed) or "none"
        console.print(f"columns that changed the answer: [bold]{changed}[/]", highlight=False)
        if not difference.comparable:
            console.print(f"[yellow]note:[/] the versions are explained in different spaces "
                          f"({difference.before.space} vs {difference.after.space})", highlight=False)


def _table(e: RowExplanation, out: OutputExplanation) -> Table:
    what = "value" if out.label is None else f"class {out.label!r}"
    table = Table(title=f"{what}: base {out.base_value:.6g} + contributions = {out.value:.6g} ({e.space})")
    for col, justify in (("column", "left"), ("input", "left"), ("contribution", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for column, value in out.ranked():
        colour = "green" if value > 0 else "red" if value < 0 else "dim"
        table.add_row(column, _fmt(e.inputs.get(column)), f"[{colour}]{value:+.6g}[/]")
    return table


def _additivity_line(out: OutputExplanation) -> None:
    ok = "[green]ok[/]" if out.additive else "[bold red]FAILED[/]"
    console.print(f"additivity {ok}: |base + sum - value| = {out.max_abs_error:.3g} (tolerance "
                  f"{out.tolerance:.3g})", highlight=False)


def _diff_table(d: ExplanationDiff) -> Table:
    a, b = d.before, d.after
    table = Table(title=f"v{a.version} → v{b.version}: prediction {_fmt(a.prediction)} → {_fmt(b.prediction)}"
                        + ("" if d.label is None else f" (class {d.label!r})"))
    for col in ("column", f"v{a.version}", f"v{b.version}", "change"):
        table.add_column(col, justify="left" if col == "column" else "right")
    for c in d.columns:
        table.add_row(c.column, f"{c.before:+.4g}", f"{c.after:+.4g}", f"{c.delta:+.4g}")
    return table


def _waterfall(e: RowExplanation, out: OutputExplanation) -> str:
    ranked = out.ranked()
    steps = [(f"{c} = {_fmt(e.inputs.get(c))}"[:40], v) for c, v in ranked[:WATERFALL_COLUMNS]]
    rest = ranked[WATERFALL_COLUMNS:]
    if rest:
        steps.append((f"{len(rest)} other columns", sum(v for _, v in rest)))
    steps.reverse()  # smallest first, so the largest contributions land next to the prediction
    what = "value" if out.label is None else f"class {out.label}"
    return waterfall_chart(out.base_value, steps, title=f"{e.model} v{e.version}, {what} ({e.space})")


def render_html(past: PastExplanation) -> str:
    """A self-contained page (inline SVG, no script, no network) with one waterfall per explained output."""
    e = past.explanation
    sections = []
    for row in [e, *([past.against] if past.against is not None else [])]:
        out = row.primary
        sections.append(f"<h2>{escape(row.model)} v{row.version}: prediction {escape(_fmt(row.prediction))}</h2>"
                        f"<p>{escape(row.explainer_detail)}. Additivity: |base + sum - value| = "
                        f"{out.max_abs_error:.3g} (tolerance {out.tolerance:.3g}).</p>{_waterfall(row, out)}")
    difference = past.difference
    if difference is not None:
        rows = "".join(f"<tr><td>{escape(c.column)}</td><td>{c.before:+.4g}</td><td>{c.after:+.4g}</td>"
                       f"<td>{c.delta:+.4g}</td></tr>" for c in difference.columns)
        sections.append(f"<h2>What changed the answer</h2><p>{escape(', '.join(difference.changed) or 'none')}</p>"
                        f"<table><tr><th>column</th><th>v{difference.before.version}</th>"
                        f"<th>v{difference.after.version}</th><th>change</th></tr>{rows}</table>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>explain {escape(past.record.request_id)}"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
            "td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>Request {escape(past.record.request_id)}, row {e.row}</h1>"
            f"<p>{escape(past.replay.summary)}</p>{''.join(sections)}</body></html>")

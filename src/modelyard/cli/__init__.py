"""The ``modelyard`` command: one sub-command per thing a user does (see DESIGN.md)."""

from __future__ import annotations

import typer

from modelyard.cli import export, models, train

app = typer.Typer(
    name="modelyard",
    help="Train, publish, serve and watch scikit-learn models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(train.train_cmd)
app.command("reproduce")(train.reproduce_cmd)
app.command("export")(export.export_cmd)
app.add_typer(models.models_app, name="models")
app.add_typer(models.alias_app, name="alias")
app.add_typer(models.import_app, name="import")


def main() -> None:
    app()

"""The ``modelyard`` command: one sub-command per thing a user does (see DESIGN.md)."""

from __future__ import annotations

import typer

from modelyard.cli import (
    deploy,
    explain,
    export,
    feedback,
    fleet,
    learn,
    log,
    models,
    monitor,
    predictions,
    retrain,
    rollout,
    score,
    serve,
    stream,
    train,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelyard",
    help="Train, publish, serve and watch scikit-learn models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: wraps at any width, never cuts an option name
)
app.command("train")(train.train_cmd)
app.command("reproduce")(train.reproduce_cmd)
app.command("export")(export.export_cmd)
app.add_typer(models.models_app, name="models")
app.add_typer(models.alias_app, name="alias")
app.add_typer(models.import_app, name="import")
app.command("monitor")(monitor.monitor_cmd)
deploy.deploy_app.command("prometheus")(monitor.prometheus_cmd)
app.add_typer(deploy.deploy_app, name="deploy")
rollout.register(app)
app.command("retrain")(retrain.retrain_cmd)
app.command("score")(score.score_cmd)
app.command("feedback")(feedback.feedback_cmd)
app.command("stream")(stream.stream_cmd)
app.command("learn")(learn.learn_cmd)
app.command("serve")(serve.serve_cmd)
app.add_typer(predictions.predictions_app, name="predictions")
app.command("replay")(predictions.replay_cmd)
app.add_typer(log.log_app, name="log")
app.command("explain")(explain.explain_cmd)
app.command("fleet")(fleet.fleet_cmd)


def main() -> None:
    app()

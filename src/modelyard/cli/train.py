"""`modelyard train` and `modelyard reproduce`: training as part of the build."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.table import Table

from modelyard.cli._common import console, friendly, settings
from modelyard.registry import Registry


@friendly
def train_cmd(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="The training spec (TOML)."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the new version."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate spec and data; publish nothing."),
    reason: str | None = typer.Option(None, "--reason", help="Recorded on the publish event."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fit the spec's pipeline, evaluate it on the held-out split, and publish it as a new version."""
    from modelyard.pipeline import load_spec, train
    spec = load_spec(spec_path)
    with console.status(f"[bold]{spec.name}[/]: starting") as status:
        if dry_run:
            from modelyard.pipeline.build import build_pipeline
            from modelyard.pipeline.training import load_training_data

            status.update("reading data")
            data = load_training_data(spec)
            build_pipeline(spec)
            console.print(f"[green]ok[/]: spec {spec_path} and {len(data.frame)} rows of {data.location} "
                          f"(sha256 {data.sha256[:12]}...) are valid; nothing was published")
            return
        result = train(spec, progress=lambda msg: status.update(f"[bold]{spec.name}[/]: {msg}"))
        status.update("writing bundle")
        registry = Registry(settings())
        with tempfile.TemporaryDirectory(prefix="modelyard-bundle-") as tmp:
            result.write_bundle(Path(tmp) / "bundle")
            status.update("publishing")
            version = registry.publish(Path(tmp) / "bundle", name=spec.name, alias=alias,
                                       reason=reason or f"trained from {spec_path}")
    if json_out:
        console.print_json(json.dumps({"name": spec.name, "version": version, "metrics": result.metrics}))
        return
    table = Table(title=f"{spec.name} v{version}: held-out metrics ({len(result.X_test)} rows)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:.6g}")
    console.print(table)
    console.print(f"published [bold]{spec.name}[/] version [bold]{version}[/]"
                  + (f" as [bold]{alias}[/]" if alias else ""))


@friendly
def reproduce_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version to rebuild."),
    broker: str | None = typer.Option(None, "--broker", help="Online versions: the NATS URL to replay the "
                                      "range from (default: the one recorded)."),
) -> None:
    """Retrain a version from its manifest: a changed data hash or different predictions exit non-zero."""
    from modelyard.cli.learn import reproduce_from_stream
    from modelyard.pipeline.lineage import stream_lineage
    from modelyard.pipeline.reproduce import reproduce
    registry = Registry(settings())
    bundle = registry.load_bundle(registry.get_version(name, version))
    if stream_lineage(bundle.manifest.lineage) is not None:  # learnt online: replay its stream range
        with console.status(f"replaying the stream range of {name} v{version}"):
            online = reproduce_from_stream(registry, bundle, broker)
        console.print(f"[green]reproduced[/] {name} v{version}: the replayed range (sha256 "
                      f"{online.data_sha256[:12]}...) rebuilds model.joblib {str(online.model_sha256)[:12]}... "
                      f"bit for bit; {online.rows_compared} held-out predictions identical")
        return
    with console.status(f"retraining {name} v{version} from its manifest"):
        report = reproduce(bundle)
    console.print(f"[green]reproduced[/] {name} v{version}: data sha256 {report.data_sha256[:12]}... matches; "
                  f"{report.rows_compared} reference predictions identical")
    for pkg, (before, now) in sorted(report.package_changes.items()):
        console.print(f"  note: {pkg} was {before}, now {now}")

"""`modelyard learn`: online training from labelled events on NATS JetStream, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from modelyard.bundle import Bundle
from modelyard.cli._common import err_console, friendly, settings
from modelyard.errors import SpecError
from modelyard.registry import Registry

if TYPE_CHECKING:
    from modelyard.pipeline.reproduce import ReproduceReport

DEFAULT_BROKER = "nats://127.0.0.1:4222"


@friendly
def learn_cmd(
    name: str = typer.Argument(..., help="The model; its versions are published as they are learnt."),
    in_subject: str = typer.Option(..., "--in", help="The subject of the labelled events (JSON: the inputs "
                                   "and the spec's target)."),
    spec_path: Path | None = typer.Option(None, "--spec", help="The online spec (\\[training] mode = \"online\"); "
                                          "needed to start a chain, checked against it when resuming."),
    broker: str | None = typer.Option(None, "--broker", help="nats://HOST:PORT (default: the spec's "
                                      "data.source when it is a nats:// URL, else " + DEFAULT_BROKER + ")."),
    dlq: str | None = typer.Option(None, "--dlq", help="Dead-letter subject (default: IN.dlq)."),
    durable: str | None = typer.Option(None, "--durable", help="The consumer, and so the chain (default: "
                                       "modelyard-learn-NAME-IN)."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at every new version."),
    fetch_batch: int = typer.Option(5000, "--fetch-batch", min=1, help="Events pulled (and learnt) at once."),
    from_seq: int = typer.Option(1, "--from-seq", min=1, help="Where a new chain starts in the stream."),
) -> None:
    """Learn NAME from --in with partial_fit; publish a version every N events or T minutes (\\[training])."""
    from modelyard.pipeline import load_spec
    from modelyard.stream.learner import StreamLearner, chain_head, default_consumer, resolve_spec
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = Registry(settings())
    given = load_spec(spec_path) if spec_path else None
    if given is not None and given.name != name:
        raise SpecError(f"{spec_path} is the spec of '{given.name}', not '{name}'")
    consumer = durable or default_consumer(name, in_subject)
    spec = resolve_spec(given, chain_head(registry, name, in_subject, consumer), name, in_subject)
    url = broker or (spec.data.source if spec.data.source.startswith("nats://") else DEFAULT_BROKER)
    learner = StreamLearner(registry, spec, broker_url=url, in_subject=in_subject, consumer=consumer,
                            dlq_subject=dlq, alias=alias, fetch_batch=fetch_batch, from_seq=from_seq)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        start = f"v{learner.parent_version}" if learner.parent_version else "a new chain"
        err_console.print(f"learning {name} from {in_subject} at sequence {learner.start_seq} on top of {start} "
                          f"(dead letters: {learner.dlq_subject}); SIGTERM publishes what was learnt and exits",
                          highlight=False)
        stats = await learner.run(stop)
        err_console.print(f"stopped: {len(stats.versions)} versions published, {stats.learnt} events learnt, "
                          f"{stats.held_out} held out, {stats.dead_lettered} dead-lettered", highlight=False)

    asyncio.run(main())


def reproduce_from_stream(registry: Registry, bundle: Bundle, broker: str | None) -> ReproduceReport:
    """``modelyard reproduce`` of an online version: replay its range from JetStream on top of its parent."""
    from modelyard.pipeline.lineage import stream_lineage
    from modelyard.pipeline.reproduce import reproduce_online
    from modelyard.stream.learner import replay
    lineage = stream_lineage(bundle.manifest.lineage)
    assert lineage is not None
    parent = (registry.load_bundle(registry.get_version(bundle.name, lineage.parent_version))
              if lineage.parent_version else None)
    return reproduce_online(bundle, replay(broker or lineage.broker, lineage), parent)

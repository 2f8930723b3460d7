"""`modelyard stream`: pattern 3, a model answering a broker subject until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from modelyard._gc import settle_heap
from modelyard.cli._common import err_console, friendly, settings
from modelyard.monitor.fleet import FleetMember
from modelyard.predlog import PredictionLogWriter
from modelyard.registry import Registry, parse_ref
from modelyard.stream.base import loop_factory


@friendly
def stream_cmd(
    ref: str = typer.Argument(..., metavar="NAME[@ALIAS]", help="The model; an alias is followed live."),
    broker: str = typer.Option("nats://127.0.0.1:4222", "--broker", help="nats://HOST:PORT or redis://HOST:PORT"),
    in_subject: str = typer.Option(..., "--in", help="Input subject (NATS) or stream key (Redis)."),
    out_subject: str = typer.Option(..., "--out", help="Where answers are published."),
    dlq: str | None = typer.Option(None, "--dlq", help="Dead-letter subject (default: IN.dlq)."),
    durable: str | None = typer.Option(None, "--durable", help="Consumer name shared by the processes of "
                                       "one deployment (default: modelyard-NAME-IN)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Messages fetched and predicted at once."),
    ack_wait: float = typer.Option(30.0, "--ack-wait", help="Seconds until redelivery."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not write the prediction log."),
    feedback: str | None = typer.Option(None, "--feedback", help="Labels subject: outcomes of answered "
                                        "messages ({request_id: message id, actual}), joined to the log."),
) -> None:
    """Consume --in, predict in batches, publish answers to --out and bad messages to the dead letters."""
    from modelyard.stream import FeedbackConsumer, ModelHolder, StreamConsumer, open_broker
    from modelyard.stream.base import safe_name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = settings()
    name, _ = parse_ref(ref)
    registry = Registry(cfg)
    holder = ModelHolder(registry, ref, interval=cfg.reload_interval)
    # the log store's inserts run in a child process: this interpreter's time is the stream's
    writer = None if no_log else PredictionLogWriter.from_settings(cfg, ship_in_child=True).start()
    consumer = StreamConsumer(
        open_broker(broker, in_subject, durable=durable or safe_name(f"modelyard-{name}-{in_subject}"),
                    ack_wait=ack_wait, in_children=True),
        holder, out_subject=out_subject, dlq_subject=dlq, batch_size=batch_size,
        log=writer,
        member=FleetMember.from_settings(cfg, registry.engine, "stream", holder.serving,
                                         details={"in": in_subject, "out": out_subject}),
    )

    labels = None if feedback is None else FeedbackConsumer(
        open_broker(broker, feedback, durable=safe_name(f"{durable or f'modelyard-{name}-{in_subject}'}-labels"),
                    ack_wait=ack_wait), registry, name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        err_console.print(f"streaming {in_subject} → {out_subject} with {name} v{holder.model.version} "
                          f"(dead letters: {consumer.dlq_subject})"
                          + (f"; outcomes from {feedback}" if feedback else "") + "; SIGTERM drains and exits",
                          highlight=False)
        if labels is None:
            stats = await consumer.run(stop)
        else:
            stats, got = await asyncio.gather(consumer.run(stop), labels.run(stop))
            err_console.print(f"outcomes: {got.matched} matched, {got.duplicate} duplicate, {got.unmatched} "
                              f"unmatched, {got.late} late, {got.invalid} invalid", highlight=False)
        err_console.print(f"drained: {stats.answered} answered, {stats.dead_lettered} dead-lettered, "
                          f"{stats.retried} left for redelivery", highlight=False)

    settle_heap(batches=True)  # the model, the modules and the children are in place: see modelyard._gc
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        if writer is not None:
            writer.stop()

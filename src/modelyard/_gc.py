"""The garbage collector's settings for a process that has finished starting: one home for them.

A long-running process (a server, the stream consumer and its helper children) holds for its whole life
what it loaded at start (modules, the model): ``gc.freeze`` moves that out of the collector's sight, so a
full collection no longer walks it. A process that handles messages in batches also allocates thousands of
containers per batch (rows, answers, records) that live until the batch is done; with the default young
threshold (700 allocations) the collector walks them several times per batch and promotes them, and the
stream consumer's processes spent a third of their CPU there. ``batches=True`` raises that threshold:
a young collection then runs about once per batch, when most of it is garbage already. The server is such
a process too: its concurrent requests, their micro-batches and the log's records waiting to ship are the
batch (32 clients: ~470 young and ~43 middle collections per 46k requests, ~8 µs a request, before; 1-2
young ones, under 1 µs, after). Cycles wait longer to be collected: a bounded amount of memory.
"""

from __future__ import annotations

import gc

__all__ = ["BATCH_YOUNG_THRESHOLD", "settle_heap"]

BATCH_YOUNG_THRESHOLD = 50_000  # allocations between two young collections in a batch-handling process


def settle_heap(*, batches: bool = False) -> None:
    """Call once start-up is done: collect once, freeze what survives; ``batches``: collect the young
    generation every ``BATCH_YOUNG_THRESHOLD`` allocations instead of every 700."""
    gc.collect()
    gc.freeze()
    if batches:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(BATCH_YOUNG_THRESHOLD, middle, old)

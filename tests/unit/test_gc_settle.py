"""``modelyard._gc.settle_heap``: what survives start-up is frozen; a batch process collects its young
generation every ``BATCH_YOUNG_THRESHOLD`` allocations, the older generations as before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from modelyard._gc import BATCH_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settle_heap_freezes_what_lives_and_keeps_the_thresholds() -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 0 and gc.get_threshold() == threshold


@pytest.mark.usefixtures("restored")
def test_a_batch_process_collects_its_young_generation_less_often() -> None:
    _, middle, old = gc.get_threshold()
    settle_heap(batches=True)
    assert gc.get_threshold() == (BATCH_YOUNG_THRESHOLD, middle, old) and gc.get_freeze_count() > 0

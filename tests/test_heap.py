"""The garbage collector's policy (gcpolicy.settle): what it frees, freezes and leaves."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from supervisord_lite.daemon import gcpolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    """A reference cycle nobody else holds (only the collector can free it)."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test process keeps the collector's defaults


def test_settle_frees_the_cycles_left_from_before() -> None:
    gone = _cycle()
    assert gone() is not None
    seconds, frozen = gcpolicy.settle()
    assert gone() is None
    assert seconds >= 0 and frozen == gc.get_freeze_count() > 0


def test_what_is_made_after_settling_is_collected_as_usual() -> None:
    gcpolicy.settle()
    kept = Node()
    before = gc.get_freeze_count()
    later = _cycle()
    gc.collect()
    assert later() is None
    assert gc.get_freeze_count() == before  # only settle freezes
    del kept


def test_a_frozen_cycle_dropped_later_is_freed_by_the_next_settle() -> None:
    """An update replaces the settled state: what it leaves goes at the next settle."""
    holder: list[Node] = []
    a, b = Node(), Node()
    a.other, b.other = b, a
    holder.append(a)
    gone = weakref.ref(a)
    del a, b
    gcpolicy.settle()  # the cycle is frozen while still held
    holder.clear()
    gc.collect()
    assert gone() is not None  # frozen: an ordinary collection does not see it
    gcpolicy.settle()
    assert gone() is None

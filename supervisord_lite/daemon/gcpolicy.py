"""The garbage collector's policy for a long-running daemon with a big, stable heap.

At a thousand instances the daemon holds hundreds of thousands of objects that live
as long as the config does (apps, instances, their sockets, records and tasks). A
collection of the oldest generation walks every one of them with the event loop
stopped: 40-100 ms, every few seconds under steady load (measured with
``gc.callbacks`` during ``tests/bench/bench_fleet.py``), and a ``/status`` request or
a respawn that waits behind it sees that as its p99.

So once the daemon has settled (after boot, after each ``update``) what exists is
moved out of the collector's sight (``gc.freeze``): later collections walk only what
was made since. Reference counting still frees frozen objects as usual; only cycles
among them wait, and what a settled state leaves behind when an update replaces it
is handed back to the collector first (``gc.unfreeze`` and one full collection, while
the update is being made anyway).
"""

from __future__ import annotations

import gc
import time


def settle() -> tuple[float, int]:
    """Collect what the previous settled state left, then freeze the heap as it is:
    (seconds it took, objects frozen)."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started, gc.get_freeze_count()

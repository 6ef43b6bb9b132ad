"""The captured output of one or more instances of an app, merged for ``supctl logs``:
a tail, and the lines written from now on (each prefixed with its instance when
there are several).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..instance.instance import Instance


def tail(targets: list[Instance], lines: int) -> list[str]:
    if len(targets) == 1:
        return targets[0].output.last(lines)
    out: list[str] = []
    for inst in targets:
        out.extend(f"{inst.name}| {line}" for line in inst.output.last(lines))
    return out


def follow(targets: list[Instance], loop: asyncio.AbstractEventLoop) -> AsyncIterator[str]:
    """Lines written from now on: subscribed at once (before the first iteration)."""
    prefix = len(targets) > 1
    queues = [(inst, inst.output.subscribe()) for inst in targets]

    async def lines() -> AsyncIterator[str]:
        merged: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump(inst: Instance, q: asyncio.Queue[str | None]) -> None:
            while (line := await q.get()) is not None:
                merged.put_nowait(f"{inst.name}| {line}" if prefix else line)
            merged.put_nowait(None)

        pumps = [loop.create_task(pump(i, q)) for i, q in queues]
        try:
            while (line := await merged.get()) is not None:
                yield line
        finally:
            for p in pumps:
                p.cancel()
            for inst, q in queues:
                inst.output.unsubscribe(q)

    return lines()

"""The usage sampler: what a status request samples, and the sampler task's life."""

from __future__ import annotations

import asyncio

from helpers import wait_until_async

from supervisord_lite.supervisor.sampler import SLICE, UsageSampler

DEADLINE = 30.0  # generous: only stops a hung test


class Fake:
    def __init__(self) -> None:
        self.calls: list[bool] = []  # missing_only of each sample_usage call

    def sample_usage(self, now: float, missing_only: bool = False) -> None:
        self.calls.append(missing_only)


def test_a_request_samples_only_what_is_missing_and_the_task_does_the_rest() -> None:
    async def main() -> None:
        fakes = [Fake() for _ in range(2 * SLICE + 7)]
        sampler = UsageSampler(asyncio.get_running_loop(), lambda: fakes, every=0.05, watched=0.3)
        sampler.asked()
        # on the request's path: one missing-only call each, nothing more
        assert all(f.calls == [True] for f in fakes)
        assert sampler.running
        # the task samples every instance, again and again while watched
        await wait_until_async(
            lambda: all(f.calls.count(False) >= 2 for f in fakes), DEADLINE, "two rounds"
        )
        # nobody asks again: it stops by itself
        await wait_until_async(lambda: not sampler.running, DEADLINE, "the sampler to stop")
        done = [len(f.calls) for f in fakes]
        sampler.asked()  # a new request starts it again
        assert sampler.running
        sampler.stop()
        await wait_until_async(
            lambda: not sampler.running, DEADLINE, "the cancelled sampler to end"
        )
        sampler.asked()  # after stop(): no task any more
        assert not sampler.running
        assert all(len(f.calls) >= n + 1 for f, n in zip(fakes, done, strict=True))

    asyncio.run(main())


def test_the_task_yields_to_the_loop_between_slices() -> None:
    """While the sampler runs a round, other tasks run between its slices."""

    async def main() -> None:
        order: list[str] = []

        class Marking(Fake):
            def sample_usage(self, now: float, missing_only: bool = False) -> None:
                if not missing_only:
                    order.append("s")

        fakes = [Marking() for _ in range(3 * SLICE)]
        sampler = UsageSampler(asyncio.get_running_loop(), lambda: fakes, every=10, watched=10)
        sampler.asked()

        async def other() -> None:
            while order.count("s") < len(fakes):
                order.append("o")
                await asyncio.sleep(0)

        await asyncio.wait_for(other(), DEADLINE)
        sampler.stop()
        runs = "".join(order).split("o")
        assert max(len(r) for r in runs) <= SLICE, [len(r) for r in runs if r]

    asyncio.run(main())

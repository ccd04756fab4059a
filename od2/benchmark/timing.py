"""Wall-clock timings for the benchmarks, alone or interleaved so that machine load hits all contenders alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 2,
                   sync: Callable[[], None] | None = None) -> float:
    """Median wall seconds of ``fn()`` over ``iters`` runs after ``warmup`` untimed ones; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before each clock read so that queued GPU work is counted."""
    return interleaved_medians({"fn": fn}, iters, warmup, sync)["fn"]


@dataclass(frozen=True)
class Rounds:
    """Wall seconds of each timed round of one contender.

    ``best`` is the statistic ``od2 bench`` compares: on a shared machine interference only ever adds time, so
    the fastest round is the most repeatable estimate of the code's own cost (the convention of Python's
    ``timeit``); ``median`` shows how much the machine's load moved during the run.
    """

    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def per(self, count: int) -> Rounds:
        """The rounds divided by ``count`` (e.g. seconds per image of a batch)."""
        return Rounds(tuple(s / count for s in self.seconds))


def interleaved_rounds(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 1,
                       sync: Callable[[], None] | None = None) -> dict[str, Rounds]:
    """Wall seconds of each of ``fns`` in each of ``iters`` rounds in which every function runs once in turn.

    Taking turns (a, b, a, b, ...) instead of a block of a then a block of b keeps their ratio honest on a
    shared machine: a burst of load from elsewhere slows both. ``warmup`` untimed rounds come first.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - start)
    return {name: Rounds(tuple(values)) for name, values in times.items()}


def interleaved_medians(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 1,
                        sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median of :func:`interleaved_rounds` for each of ``fns``."""
    return {name: rounds.median for name, rounds in interleaved_rounds(fns, iters, warmup, sync).items()}

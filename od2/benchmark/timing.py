"""Wall-clock medians for the benchmarks, alone or interleaved so that machine load hits all contenders alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 2,
                   sync: Callable[[], None] | None = None) -> float:
    """Median wall seconds of ``fn()`` over ``iters`` runs after ``warmup`` untimed ones; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before each clock read so that queued GPU work is counted."""
    return interleaved_medians({"fn": fn}, iters, warmup, sync)["fn"]


def interleaved_medians(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 1,
                        sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median wall seconds of each of ``fns`` over ``iters`` rounds in which every function runs once in turn.

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
    return {name: statistics.median(values) for name, values in times.items()}

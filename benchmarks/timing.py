"""The one timing helper the benchmark scripts share."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 2,
                   sync: Callable[[], None] | None = None) -> float:
    """Median wall seconds of ``fn()`` over ``iters`` runs after ``warmup`` untimed ones; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before each clock read so that queued GPU work is counted."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

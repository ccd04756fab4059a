"""Learning-rate schedules as closed-form functions of the iteration (so resuming is exact).

``SOLVER.LR_DECAY_TYPE``: ``piecewise`` (times GAMMA at each of STEPS), ``cosine`` (half cosine from the
end of warmup to MAX_ITER, down to MIN_LR), ``constant``. Warmup is linear from WARMUP_FACTOR x BASE_LR to
BASE_LR over WARMUP_ITERS iterations and replaces the decayed value while it lasts (the original's rule).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

DECAY_TYPES = ("piecewise", "cosine", "constant")


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    max_iter: int
    decay_type: str = "piecewise"
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr: float = 1e-6
    warmup_iters: int = 0
    warmup_factor: float = 0.0

    def __post_init__(self):
        if self.decay_type not in DECAY_TYPES:
            raise ValueError(f"unknown SOLVER.LR_DECAY_TYPE {self.decay_type!r}; choose one of {DECAY_TYPES}")

    @classmethod
    def from_cfg(cls, solver) -> "LRSchedule":
        return cls(base_lr=solver.BASE_LR, max_iter=solver.MAX_ITER, decay_type=solver.LR_DECAY_TYPE,
                   steps=tuple(solver.STEPS), gamma=solver.GAMMA, min_lr=solver.MIN_LR,
                   warmup_iters=solver.WARMUP_ITERS, warmup_factor=solver.WARMUP_FACTOR)

    def __call__(self, iteration: int) -> float:
        """Learning rate used for the update of (0-based) ``iteration``."""
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            return self.base_lr * (self.warmup_factor * (1 - alpha) + alpha)
        if self.decay_type == "piecewise":
            return self.base_lr * self.gamma ** bisect.bisect_right(sorted(self.steps), iteration)
        if self.decay_type == "cosine":
            span = max(self.max_iter - self.warmup_iters, 1)
            progress = min(iteration - self.warmup_iters, span) / span
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        return self.base_lr

"""Exponential moving average (EMA) of a model's weights (MODEL.EMA), as timm's ModelEmaV2 and YOLOv5 keep it.

The EMA is a frozen copy of the bare (non-DDP) model. After every optimizer step ``update(model)`` moves each
floating-point entry of its ``state_dict`` (parameters and floating buffers such as BN running statistics)
towards the training model's::

    d_n  = min(DECAY, (1 + n) / (10 + n))   with WARMUP (n = updates done before this one: 0, 1, 2, ...)
    d_n  = DECAY                             without WARMUP
    ema <- d_n * ema + (1 - d_n) * model

so with WARMUP the first update keeps 10% of the initial weights and the ramp reaches DECAY=0.9998 after about
45,000 updates (the ramp of TensorFlow's ``ExponentialMovingAverage(num_updates=n)``, in the role of YOLOv5's and
timm's warm-up ramps). Integer buffers (e.g. BN ``num_batches_tracked``) are copied. The EMA starts as a copy of
the model it is built from.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class ModelEMA:
    """EMA of ``model``'s state_dict; ``module`` is the averaged model (eval mode, no gradients)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL.EMA.DECAY must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        state = self.module.state_dict()  # detached tensors sharing storage with the module
        self.float_keys = [k for k, v in state.items() if v.is_floating_point()]
        self.other_keys = [k for k, v in state.items() if not v.is_floating_point()]
        self.float_tensors = [state[k] for k in self.float_keys]
        self.other_tensors = [state[k] for k in self.other_keys]

    def decay_at(self, n: int) -> float:
        """The decay of the update that follows ``n`` earlier updates."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMA step towards ``model`` (same architecture as the EMA, not DDP-wrapped)."""
        weight = 1.0 - self.decay_at(self.updates)
        state = model.state_dict()
        if self.float_tensors:
            torch._foreach_lerp_(self.float_tensors, [state[k] for k in self.float_keys], weight)
        if self.other_tensors:
            torch._foreach_copy_(self.other_tensors, [state[k] for k in self.other_keys])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """``{"ema": averaged model state_dict, "ema_updates": int}`` (the keys a training checkpoint holds)."""
        return {"ema": self.module.state_dict(), "ema_updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`'s output (or a checkpoint holding those keys)."""
        self.module.load_state_dict(state["ema"])  # copies in place: the cached tensor lists stay valid
        self.updates = int(state["ema_updates"])

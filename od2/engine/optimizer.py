"""The SGD optimizer with detectron2's weight-decay groups.

Each trainable parameter falls in one group, by the module that owns it:

- ``norm``: parameters of normalisation layers (:func:`od2.layers.norms.is_norm_module`) get
  ``SOLVER.WEIGHT_DECAY_NORM``;
- ``bias``: parameters named ``bias`` of any other layer get ``SOLVER.WEIGHT_DECAY_BIAS`` (negative = the same as
  ``SOLVER.WEIGHT_DECAY``, detectron2's ``null``);
- ``decay``: everything else (conv and linear weights) gets ``SOLVER.WEIGHT_DECAY``.

Frozen parameters (``requires_grad=False``) are left out, a parameter reachable from several modules appears
once (in the group of the first module that owns it, in ``named_modules`` order), and empty groups are dropped.
"""

from __future__ import annotations

import logging

import torch

from od2.config import CfgNode
from od2.layers.norms import is_norm_module

logger = logging.getLogger(__name__)


def param_groups(model: torch.nn.Module, weight_decay: float, weight_decay_norm: float,
                 weight_decay_bias: float) -> list[dict]:
    """At most 3 optimizer groups ``{"name", "params", "weight_decay"}`` in the order decay, norm, bias."""
    groups = {"decay": [], "norm": [], "bias": []}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            kind = "norm" if is_norm_module(module) else "bias" if name == "bias" else "decay"
            groups[kind].append(param)
    decays = {"decay": weight_decay, "norm": weight_decay_norm, "bias": weight_decay_bias}
    return [{"name": kind, "params": params, "weight_decay": decays[kind]} for kind, params in groups.items()
            if params]


def build_optimizer(model: torch.nn.Module, solver: CfgNode) -> torch.optim.SGD:
    """SGD with momentum over ``model``'s trainable parameters, weight decay by group (module docstring)."""
    bias_decay = solver.WEIGHT_DECAY if solver.WEIGHT_DECAY_BIAS < 0 else solver.WEIGHT_DECAY_BIAS
    groups = param_groups(model, solver.WEIGHT_DECAY, solver.WEIGHT_DECAY_NORM, bias_decay)
    logger.info("optimizer: SGD, tensors per weight-decay group: %s", ", ".join(
        f"{g['name']} {len(g['params'])} (wd {g['weight_decay']:g})" for g in groups))
    return torch.optim.SGD(groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM)

"""``MODEL.COMPILE``: the training forward of the model's backbone, neck and head through ``torch.compile``.

What is compiled, and why:

- The parts (``backbone``, ``neck``, ``head``), not the whole model. Their inputs have the batch's canvas shape
  only, so a graph holds per canvas size (after a second size, dynamo makes the sizes dynamic). The loss stays
  eager: target matching indexes by the batch's boxes (shapes that change every step) and the focal loss is a
  custom autograd Function that computes in cache-sized chunks. The norms, a few element-wise kernels each in
  eager (EvoNorm-S0, spectral norm, SwitchNorm), are what compiling fuses first.
- In place, by replacing each part's ``forward`` with one that runs the compiled forward in training mode with
  gradients on and the eager one otherwise. The module tree, parameters and ``state_dict`` keys stay those of the
  eager model (``torch.compile(model)`` would prefix them with ``_orig_mod.``), so checkpoints load into an eager
  model, a resume copies weights in place under the compiled code, and evaluations during training run eager
  (compiling inference is TEST.COMPILE's job, at test time).
- After the DistributedDataParallel wrap and after the EMA copy: DDP's gradient hooks sit on the parameters and
  fire as the compiled backward produces their gradients (compiling the parts inside DDP behaves as compiling
  before the wrap; PyTorch's alternative, ``torch.compile(ddp_model)``, splits one graph at DDP's buckets, but the
  whole model does not compile cleanly here, see above), and a deep copy of a compiled part would call the
  original's compiled code, so the EMA copies the eager model first.
- AMP: the parts run inside the trainer's ``torch.autocast``; dynamo guards on the autocast state, so bf16 or
  fp16 compiles its own graphs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from od2.utils.cfg_node import CfgNode, ConfigError, check_choice

# Modes of torch.compile for training ("": off). reduce-overhead (CUDA graphs) is left out: the trainer's batches
# change canvas size, and TEST.COMPILE uses it for the fixed canvases of inference.
COMPILE_MODES = ("", "default", "max-autotune", "max-autotune-no-cudagraphs")
# The model's children compiled, in forward order.
COMPILED_PARTS = ("backbone", "neck", "head")


def compile_settings(model_cfg: CfgNode) -> tuple[str, str] | None:
    """MODEL.COMPILE and MODEL.COMPILE_BACKEND -> (mode, backend), None when off; a ConfigError naming the key when
    a value is unknown, or when a mode other than "default" is given to a backend that takes none (only inductor
    has modes)."""
    mode, backend = model_cfg.COMPILE, model_cfg.COMPILE_BACKEND
    check_choice("MODEL.COMPILE", mode, list(COMPILE_MODES))
    if not mode:
        return None
    check_choice("MODEL.COMPILE_BACKEND", backend, torch.compiler.list_backends(exclude_tags=()))
    if backend != "inductor" and mode != "default":
        raise ConfigError(f"MODEL.COMPILE={mode!r} is a mode of the inductor backend, but MODEL.COMPILE_BACKEND="
                          f"{backend!r}; use MODEL.COMPILE=default with that backend, or COMPILE_BACKEND=inductor")
    return mode, backend


def compile_training_forward(module: nn.Module, mode: str, backend: str) -> None:
    """Make ``module`` run ``torch.compile(module.forward)`` when it is in training mode with gradients enabled, and
    its eager forward otherwise (evaluation, ``no_grad``, export). In place; the module tree and state_dict stay."""
    eager = module.forward
    compiled = torch.compile(eager, mode=mode, backend=backend)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if module.training and torch.is_grad_enabled():
            return compiled(*args, **kwargs)
        return eager(*args, **kwargs)

    module.forward = forward


def compile_for_training(model: nn.Module, mode: str, backend: str) -> list[str]:
    """:func:`compile_training_forward` on each of ``model``'s :data:`COMPILED_PARTS` it has; returns their names.

    Call it on the bare model (not the DDP wrapper) once the EMA, if any, has copied it. A ValueError when the
    model has none of the parts.
    """
    parts = [name for name in COMPILED_PARTS if isinstance(getattr(model, name, None), nn.Module)]
    if not parts:
        raise ValueError(f"MODEL.COMPILE: {type(model).__name__} has none of the parts od2 compiles "
                         f"({', '.join(COMPILED_PARTS)})")
    for name in parts:
        compile_training_forward(getattr(model, name), mode, backend)
    return parts

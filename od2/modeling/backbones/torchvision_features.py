"""MobileNetV3-Large and EfficientNet-B0 backbones: torchvision's ``features`` stack cut after its last tap.

Both keep torchvision's submodule names (``features.N...``), so a torchvision ImageNet state_dict given as
``MODEL.WEIGHTS`` loads key for key; its classifier keys are reported as unexpected (see
:func:`~od2.modeling.backbones.utils.load_matching_state_dict`). No weights are downloaded: without
``MODEL.WEIGHTS`` they start from torchvision's random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import Tensor, nn

from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones.utils import convert_to_frozen_bn

__all__ = ["EfficientNetB0", "MobileNetV3Large", "TorchvisionFeatures"]

# BatchNorm eps that torchvision trained each net with; its weights are only right with it. MobileNetV3 also
# trained with momentum 0.01 (TF's 0.99 decay), which od2 keeps when its BN trains.
MOBILENET_V3_BN_EPS, MOBILENET_V3_BN_MOMENTUM = 1e-3, 0.01
EFFICIENTNET_B0_BN_EPS = 1e-5


def _with_bn_eps(norm_layer: Callable[[int], nn.Module] | None, eps: float,
                 momentum: float | None = None) -> Callable[[int], nn.Module]:
    """``norm_layer`` (default FrozenBatchNorm2d) with ``eps`` (and ``momentum`` if given, on trainable BN) on
    batch-norm-type layers."""
    factory = norm_layer or FrozenBatchNorm2d

    def build(channels: int) -> nn.Module:
        norm = factory(channels)
        if isinstance(norm, (nn.modules.batchnorm._NormBase, FrozenBatchNorm2d)):
            norm.eps = eps
            if momentum is not None and isinstance(norm, nn.modules.batchnorm._NormBase):
                norm.momentum = momentum
        return norm

    return build


class TorchvisionFeatures(nn.Module):
    """A torchvision ``features`` ``nn.Sequential`` with feature taps.

    Subclasses give the stack and two tables: ``taps`` (index of the block whose output is exported -> name,
    e.g. ``{6: "C3"}``) and ``stage_ends`` (for ``freeze_at`` k = 0..5, how many leading blocks are frozen: 0 none, 1
    the stem conv only, 2-4 the blocks up to the last one at stride ``2**k``, 5 everything), like ResNet's
    ``freeze_at`` (whose 1 is the stem too).

    An ``H x W`` input gives ``ceil(H/s) x ceil(W/s)`` maps (symmetric "same" padding with stride 2 rounds up).
    """

    # torchvision ImageNet normalisation on the 0-255 RGB scale.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __init__(self, features: nn.Sequential, taps: dict[int, str], channels: dict[str, int],
                 stage_ends: dict[int, int], freeze_at: int) -> None:
        super().__init__()
        if freeze_at not in stage_ends:
            raise ValueError(f"freeze_at must be in [0, {max(stage_ends)}], got {freeze_at}")
        self.features = features[: max(taps) + 1]
        self.taps = taps
        self.out_channels: dict[str, int] = dict(channels)
        self.strides: dict[str, int] = {name: 2 ** int(name[1:]) for name in channels}
        num_frozen = stage_ends[freeze_at]
        for index in range(num_frozen):
            self.features[index].requires_grad_(False)
            self.features[index] = convert_to_frozen_bn(self.features[index])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Map a normalised batch ``float [B, 3, H, W]`` to ``{"C3", "C4", "C5"}``, each ``[B, C_k, ceil(H/s_k),
        ceil(W/s_k)]`` with the channels and strides of :attr:`out_channels` / :attr:`strides`."""
        out = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.taps:
                out[self.taps[index]] = x
        return out


class MobileNetV3Large(TorchvisionFeatures):
    """MobileNetV3-Large (hard-swish, squeeze-excitation; torchvision's), taps as the original's TF-slim
    endpoints ``layer_7 / layer_13 / layer_17`` (original-spec §15): ``C3`` = block 6 (40ch, stride 8),
    ``C4`` = block 12 (112ch, stride 16), ``C5`` = block 16, the 1x1 conv to 960 channels (stride 32).

    Args:
        norm_layer: ``channels -> nn.Module`` norm factory; ``None`` means ``FrozenBatchNorm2d``. Batch-norm-type
            layers get eps 1e-3, which torchvision's weights were trained with.
        freeze_at: 0 trains everything; 1 freezes the stem conv, 2-4 the blocks up to stride ``2**k``, 5 all;
            frozen blocks' batch norms become ``FrozenBatchNorm2d``.
    """

    def __init__(self, norm_layer: Callable[[int], nn.Module] | None = None, freeze_at: int = 0) -> None:
        norm_layer = _with_bn_eps(norm_layer, MOBILENET_V3_BN_EPS, MOBILENET_V3_BN_MOMENTUM)
        net = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        super().__init__(net.features, {6: "C3", 12: "C4", 16: "C5"}, {"C3": 40, "C4": 112, "C5": 960},
                         {0: 0, 1: 1, 2: 4, 3: 7, 4: 13, 5: 17}, freeze_at)


class EfficientNetB0(TorchvisionFeatures):
    """EfficientNet-B0 (swish, squeeze-excitation; torchvision's, with symmetric padding where the TF original
    pads "SAME"), taps the original's ``reduction_3/4/5`` endpoints (original-spec §14): ``C3`` = stage 3 output
    (40ch, stride 8), ``C4`` = stage 5 (112ch, stride 16), ``C5`` = stage 7 (320ch, stride 32). The 1280-channel
    head conv and the classifier are not built.

    Args:
        norm_layer: as :class:`MobileNetV3Large`, with torchvision's B0 eps 1e-5.
        freeze_at: as :class:`MobileNetV3Large`.
        drop_path_rate: stochastic depth of the last block; torchvision scales it linearly over the blocks. The
            original runs its frozen-BN backbone in inference mode, so without drop-connect: default 0.
    """

    def __init__(self, norm_layer: Callable[[int], nn.Module] | None = None, freeze_at: int = 0,
                 drop_path_rate: float = 0.0) -> None:
        norm_layer = _with_bn_eps(norm_layer, EFFICIENTNET_B0_BN_EPS)
        net = torchvision.models.efficientnet_b0(weights=None, norm_layer=norm_layer,
                                                 stochastic_depth_prob=drop_path_rate)
        super().__init__(net.features, {3: "C3", 5: "C4", 7: "C5"}, {"C3": 40, "C4": 112, "C5": 320},
                         {0: 0, 1: 1, 2: 3, 3: 4, 4: 6, 5: 8}, freeze_at)

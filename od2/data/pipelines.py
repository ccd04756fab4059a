"""Per-image training pipelines by name (``INPUT.DATAPROCESS``, as the original's data processes).

Every pipeline ends with the multi-scale ResizeShortestEdge and RandomHorizontalFlip; the AutoAugment variants run
first, on the original-resolution image, as in the original (original-spec §7):

- ``coco``: resize, flip (the default; the original's ``coco`` process).
- ``AA``: AutoAugment detection policy v0 (Zoph et al. 2019), then resize, flip. ``AA_V1``/``AA_V2``/``AA_V3``: the
  paper's policies v1-v3.
- ``WAA``: the original author's whole-image policy (original-spec §7.2), then resize, flip.
"""

from __future__ import annotations

from collections.abc import Sequence

from od2.config import ConfigError
from od2.data.autoaugment import AutoAugment
from od2.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge, Transform
from od2.data.waa import WAutoAugment

__all__ = ["DATAPROCESSES", "build_train_transforms"]

DATAPROCESSES = ("coco", "AA", "AA_V1", "AA_V2", "AA_V3", "WAA")


def _augmentation(name: str) -> list[Transform]:
    """The transforms a DATAPROCESS runs before resizing."""
    if name == "coco":
        return []
    if name == "WAA":
        return [WAutoAugment()]
    return [AutoAugment("v0" if name == "AA" else name.removeprefix("AA_").lower())]


def build_train_transforms(dataprocess: str, min_sizes: Sequence[int], max_size: int, flip_prob: float) -> Compose:
    """The per-image training pipeline ``dataprocess`` (one of ``DATAPROCESSES``) with the given resize and flip.

    Raises:
        ConfigError: an unknown ``dataprocess``, naming the known ones.
    """
    if dataprocess not in DATAPROCESSES:
        raise ConfigError(f"INPUT.DATAPROCESS={dataprocess!r} is not a known pipeline; choose one of {DATAPROCESSES}")
    return Compose([*_augmentation(dataprocess), ResizeShortestEdge(tuple(min_sizes), max_size),
                    RandomHorizontalFlip(flip_prob)])

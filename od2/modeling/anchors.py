"""Anchor generation: per pyramid level, a grid of cell anchors (original-spec §3.5).

Per level the cell anchors are ordered ratio-major, size-minor (index = r * len(sizes) + s), with
``h = size / sqrt(ratio)``, ``w = size * sqrt(ratio)`` (ratio = w/h). A level's anchors are flattened in
(y, x, anchor) order, which is the order the head's outputs are flattened in. Cell centres sit at
``(j + offset) * stride``: offset 0.5 (the default, the original) centres them in their cells, 0 puts them on the
cells' top-left corners as torchvision and detectron2 do. torchvision also rounds the cell anchors' corners to whole
pixels (``round_cells``). Anchors are absolute XYXY pixels of the padded input and are not clipped.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn


def cell_anchors(sizes: list[float], ratios: list[float], round_cells: bool = False) -> torch.Tensor:
    """Anchors centred on (0, 0): float32 [len(ratios) * len(sizes), 4] XYXY; ``round_cells`` rounds each corner
    to the nearest whole pixel (halves to even), as torchvision's ``AnchorGenerator.generate_anchors``."""
    boxes = []
    for ratio in ratios:
        for size in sizes:
            w, h = size * math.sqrt(ratio), size / math.sqrt(ratio)
            boxes.append([-w / 2, -h / 2, w / 2, h / 2])
    cells = torch.tensor(boxes, dtype=torch.float32)
    return cells.round() if round_cells else cells


class AnchorGenerator(nn.Module):
    """Anchors for every level of a feature pyramid.

    Args:
        sizes: per level, the anchor sizes (square-root of area) in input pixels. One list is broadcast to
            every level.
        aspect_ratios: per level, the ratios w/h; one list is broadcast to every level.
        strides: the stride of each level, finest first.
        offset: cell centres at ``(j + offset) * stride`` (0.5: the cell's centre; 0: its top-left corner).
        round_cells: round the cell anchors' corners to whole pixels (torchvision).
    """

    CACHE_SIZE = 64

    def __init__(self, sizes: list[list[float]], aspect_ratios: list[list[float]], strides: list[int],
                 offset: float = 0.5, round_cells: bool = False):
        super().__init__()
        num_levels = len(strides)
        sizes = sizes * num_levels if len(sizes) == 1 else sizes
        aspect_ratios = aspect_ratios * num_levels if len(aspect_ratios) == 1 else aspect_ratios
        if len(sizes) != num_levels or len(aspect_ratios) != num_levels:
            raise ValueError(
                f"MODEL.ANCHOR_GENERATOR has {len(sizes)} size lists and {len(aspect_ratios)} ratio lists "
                f"for {num_levels} pyramid levels; give one list or one per level"
            )
        self.strides = list(strides)
        self.offset = offset
        self.cells = [cell_anchors(s, r, round_cells) for s, r in zip(sizes, aspect_ratios)]
        counts = {len(c) for c in self.cells}
        if len(counts) != 1:
            raise ValueError("every pyramid level needs the same number of anchors per cell (shared head)")
        self.num_anchors = counts.pop()
        self._cache: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()

    def forward(self, feature_sizes: list[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
        """Per level, float32 [h * w * A, 4] anchors for feature maps of the given (h, w) sizes.

        The most recent ``CACHE_SIZE`` (sizes, device) pairs are cached (test images come in many sizes), each grid
        made on its device (no host-to-device copy after the first call), except while tracing for export, where
        the grid must be computed from the traced sizes, and inside ``torch.compile``, whose graph computes it once
        per compiled shape (a cache mutated inside the compiled region would break the graph).
        """
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            # tracing: a cached grid would enter an exported graph as a constant of one size
            return [self._grid(size, stride, cell.to(device), self.offset)
                    for size, stride, cell in zip(feature_sizes, self.strides, self.cells)]
        key = (tuple(feature_sizes), str(device))
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = [self._grid(size, stride, cell.to(device), self.offset)
                                for size, stride, cell in zip(feature_sizes, self.strides, self.cells)]
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._cache[key]

    @staticmethod
    def _grid(size: tuple[int, int], stride: int, cell: torch.Tensor, offset: float) -> torch.Tensor:
        h, w = size
        ys = (torch.arange(h, dtype=torch.float32, device=cell.device) + offset) * stride
        xs = (torch.arange(w, dtype=torch.float32, device=cell.device) + offset) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        return (centres + cell.reshape(1, -1, 4)).reshape(-1, 4)

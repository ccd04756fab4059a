"""Sliced inference for large images: the model on overlapping tiles (and optionally the whole image), merged.

Objects of a few pixels vanish when a large image (aerial, microscopy, a scan) is shrunk to the test size; each
tile is resized like a test image instead (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), so a tile of about the training
images' size keeps its objects at the scale the model learned. Detections are mapped back to full-image pixels and
merged by class-wise NMS (TEST.SLICE.MERGE=nms, the default), or with ``pieces`` first joined where a tile edge cut
an object (:func:`od2.evaluation.merge.greedy_ios_merge`), so that an object across a seam comes back as one box.
"""

from __future__ import annotations

import torch
from torch import nn

from od2.data.transforms import resized_hw

from .merge import greedy_ios_merge, nms_merge
from .tta import pad_batch, resize_chw

SLICE_MERGES = ("pieces", "nms")  # TEST.SLICE.MERGE


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with neighbours overlapping by at least
    ``overlap`` of a tile: steps of ``tile - round(overlap * tile)``, the last tile moved back to end at the edge
    (so every tile has the full size); one tile at 0 when ``length <= tile``."""
    if length <= tile:
        return [0]
    step = max(1, tile - round(overlap * tile))
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_windows(height: int, width: int, tile_hw: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles of a ``height`` x ``width`` image as (y0, x0, y1, x1) pixel windows, row by row; a tile larger than the
    image is cut to it."""
    tile_h, tile_w = min(tile_hw[0], height), min(tile_hw[1], width)
    return [(y, x, y + tile_h, x + tile_w) for y in tile_starts(height, tile_h, overlap)
            for x in tile_starts(width, tile_w, overlap)]


class SlicedInference(nn.Module):
    """Detections of ``model`` on overlapping tiles of each image (plus the whole image when ``full_image``), in
    the image's pixels, merged by class-wise NMS or by joining cut pieces first (``merge``).

    Args:
        model: ``(images uint8 [B, 3, H, W], image_sizes [B, 2]) -> per image dict(boxes, scores, labels)`` in the
            pixels of images.
        tile_hw: (height, width) of a tile in the input's pixels (TEST.SLICE.SIZE).
        overlap: the share of a tile that neighbouring tiles overlap, in [0, 1) (TEST.SLICE.OVERLAP).
        full_image: also run the whole image at the test size, for objects larger than a tile.
        min_size, max_size: each tile (and the full image) is resized as a test image (INPUT.MIN/MAX_SIZE_TEST).
        ios_thresh: greedy merging threshold on intersection over the smaller box (TEST.SLICE.MATCH_THRESH), for
            pieces of an object cut by a tile edge.
        iou_thresh: class-wise NMS threshold for the other duplicates (MODEL.RETINANET.NMS_THRESH_TEST).
        merge: ``nms`` (TEST.SLICE.MERGE's default): class-wise NMS of every tile's detections (a cut piece and its
            whole may both stay; 1 AP better than ``pieces`` on the digits canvases of docs/benchmarks.md);
            ``pieces``: pieces cut by a tile edge joined by IoS first (one box per object across seams).
        max_detections: kept per image after merging.
        batch_size: tiles per forward pass.
        size_divisibility: zero padding of a batch of tiles, as the test loader pads.
    """

    def __init__(self, model: nn.Module, tile_hw: tuple[int, int], overlap: float, *, full_image: bool,
                 min_size: int, max_size: int, ios_thresh: float, iou_thresh: float, max_detections: int,
                 merge: str = "nms", batch_size: int = 4, size_divisibility: int = 32) -> None:
        super().__init__()
        if not 0 <= overlap < 1:
            raise ValueError(f"the tile overlap must be in [0, 1), got {overlap}")
        if merge not in SLICE_MERGES:
            raise ValueError(f"merge must be one of {SLICE_MERGES}, got {merge!r}")
        self.merge = merge
        self.model = model
        self.tile_hw, self.overlap, self.full_image = (int(tile_hw[0]), int(tile_hw[1])), overlap, full_image
        self.min_size, self.max_size = min_size, max_size
        self.ios_thresh, self.iou_thresh, self.max_detections = ios_thresh, iou_thresh, max_detections
        self.batch_size, self.size_divisibility = batch_size, size_divisibility

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @torch.no_grad()
    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """uint8 ``images`` [B, 3, H, W] with content ``image_sizes`` [B, 2] -> per image merged detections, boxes
        XYXY in the pixels of ``images``, sorted by decreasing score."""
        results = []
        for image, (height, width) in zip(images, image_sizes.tolist()):
            windows = tile_windows(height, width, self.tile_hw, self.overlap)
            if self.full_image and len(windows) > 1:
                windows.append((0, 0, height, width))
            parts = []
            for first in range(0, len(windows), self.batch_size):
                parts += self._window_detections(image, windows[first:first + self.batch_size], (height, width))
            boxes, scores, labels, cut = (torch.cat([part[k] for part in parts]) for k in range(4))
            if self.merge == "nms":
                results.append(nms_merge(boxes, scores, labels, iou_thresh=self.iou_thresh,
                                         max_detections=self.max_detections))
            else:
                results.append(greedy_ios_merge(boxes, scores, labels, ios_thresh=self.ios_thresh, cut=cut,
                                                iou_thresh=self.iou_thresh, max_detections=self.max_detections))
        return results

    def _window_detections(self, image: torch.Tensor, windows: list[tuple[int, int, int, int]],
                           image_hw: tuple[int, int]) -> list[tuple[torch.Tensor, ...]]:
        """(boxes in the image's pixels, scores, labels, cut) for each (y0, x0, y1, x1) window, in one forward
        pass; ``cut`` (bool [N, 4]): which sides (x1, y1, x2, y2) of a box lie within a view pixel of an edge of its
        window inside the ``image_hw`` image (a piece of an object the window cuts)."""
        views, scales = [], []
        for y0, x0, y1, x1 in windows:
            view_h, view_w = resized_hw(y1 - y0, x1 - x0, self.min_size, self.max_size)
            views.append(resize_chw(image[:, y0:y1, x0:x1], view_h, view_w))
            scales.append([(x1 - x0) / view_w, (y1 - y0) / view_h] * 2)
        batch, sizes = pad_batch(views, self.size_divisibility)
        outputs = self.model(batch, sizes.to(batch.device))
        parts = []
        for output, (y0, x0, y1, x1), scale in zip(outputs, windows, scales):
            offset = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=image.device)
            boxes = output["boxes"].float() * torch.tensor(scale, device=image.device) + offset
            inner_edge = torch.tensor([x0 > 0, y0 > 0, x1 < image_hw[1], y1 < image_hw[0]], device=image.device)
            edge = torch.tensor([x0, y0, x1, y1], dtype=torch.float32, device=image.device)
            near = (boxes - edge).abs() <= torch.tensor(scale, device=image.device)
            parts.append((boxes, output["scores"], output["labels"], near & inner_edge))
        return parts

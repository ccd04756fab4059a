"""Test-time augmentation: a model's detections over horizontal flips and several test sizes, merged.

:class:`TestTimeAugmentation` wraps a detector with the model's calling convention, ``(images, image_sizes) ->
per image dict(boxes, scores, labels)`` in the pixels of ``images``, so ``run_inference`` (``od2 eval``) and a
Detector call it as they call the model. Each image's content is resized for every test size from the pixels it
arrives in: the loader hands it over at the largest test size
(:func:`od2.evaluation.predictor.build_test_predictor`), so each view is a downscale, as close to resizing the
original as od2's antialiased bilinear resize gets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from od2.data.transforms import resized_hw

from .merge import nms_merge


def resize_chw(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, height, width], bilinear with antialiasing (od2.data.transforms.resize_image)."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                        antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def pad_batch(images: list[torch.Tensor], size_divisibility: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [3, h_i, w_i] images -> (uint8 [N, 3, H, W] zero-padded bottom/right to a multiple of
    ``size_divisibility``, int64 [N, 2] content sizes), as the test loader pads."""
    sizes = torch.tensor([list(image.shape[-2:]) for image in images], dtype=torch.int64)
    height, width = sizes.max(dim=0).values.tolist()
    if size_divisibility > 0:
        height, width = (-(-height // size_divisibility) * size_divisibility,
                         -(-width // size_divisibility) * size_divisibility)
    batch = images[0].new_zeros(len(images), 3, height, width)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def tta_max_size(min_size: int, aug_max_size: int, test_min_size: int, test_max_size: int) -> int:
    """The long-side cap for test size ``min_size``: TEST.AUG.MAX_SIZE, or when 0 INPUT.MAX_SIZE_TEST scaled by
    ``min_size / INPUT.MIN_SIZE_TEST`` (the same aspect-ratio cap at every size)."""
    return aug_max_size if aug_max_size > 0 else max(1, round(test_max_size * min_size / test_min_size))


class TestTimeAugmentation(nn.Module):
    """Detections of ``model`` on every test size (and its horizontal flip), merged by class-wise NMS.

    Args:
        model: ``(images uint8 [B, 3, H, W], image_sizes [B, 2]) -> per image dict(boxes [M, 4] XYXY in the pixels
            of images, scores [M], labels [M])``, a RetinaNet for one.
        min_sizes / max_sizes: per view, the short side and long-side cap the content is resized to.
        flip: add the horizontal flip of every size.
        iou_thresh: class-wise NMS over the union of the views' detections.
        max_detections: kept per image after merging.
        size_divisibility: the views are zero-padded to a multiple of it, as the test loader pads.
    """

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, model: nn.Module, min_sizes: list[int], max_sizes: list[int], *, flip: bool,
                 iou_thresh: float, max_detections: int, size_divisibility: int = 32) -> None:
        super().__init__()
        if not min_sizes or len(min_sizes) != len(max_sizes):
            raise ValueError(f"test-time augmentation needs one max size per min size, got {min_sizes}, {max_sizes}")
        self.model = model
        self.min_sizes, self.max_sizes, self.flip = list(min_sizes), list(max_sizes), flip
        self.iou_thresh, self.max_detections, self.size_divisibility = iou_thresh, max_detections, size_divisibility

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @torch.no_grad()
    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """uint8 ``images`` [B, 3, H, W] with content ``image_sizes`` [B, 2] -> per image merged detections, boxes
        XYXY in the pixels of ``images``, sorted by decreasing score."""
        results = []
        for image, (height, width) in zip(images, image_sizes.tolist()):
            views = [self._view_detections(image[:, :height, :width], min_size, max_size)
                     for min_size, max_size in zip(self.min_sizes, self.max_sizes)]
            boxes, scores, labels = (torch.cat([part[k] for view in views for part in view]) for k in range(3))
            results.append(nms_merge(boxes, scores, labels, iou_thresh=self.iou_thresh,
                                     max_detections=self.max_detections))
        return results

    def _view_detections(self, image: torch.Tensor, min_size: int, max_size: int) -> list[tuple[torch.Tensor, ...]]:
        """(boxes in ``image``'s pixels, scores, labels) of the view at this size, and of its flip."""
        height, width = image.shape[-2:]
        view_h, view_w = resized_hw(height, width, min_size, max_size)
        view = resize_chw(image, view_h, view_w)
        batch, sizes = pad_batch([view, view.flip(-1)] if self.flip else [view], self.size_divisibility)
        outputs = self.model(batch, sizes.to(batch.device))
        scale = torch.tensor([width / view_w, height / view_h] * 2, device=image.device)
        parts = []
        for output, flipped in zip(outputs, (False, True)):
            boxes = output["boxes"]
            if flipped:  # x -> view_w - x, and the box's left and right edges swap
                boxes = torch.stack([view_w - boxes[:, 2], boxes[:, 1], view_w - boxes[:, 0], boxes[:, 3]], dim=1)
            parts.append((boxes * scale, output["scores"], output["labels"]))
        return parts

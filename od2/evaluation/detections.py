"""One image's detections in its original pixels: the result type of :class:`od2.Detector`, ``od2 predict`` and
``od2 eval`` alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_convert

from od2.utils.visualize import draw_detections

__all__ = ["Detections", "detections_in_original_pixels"]


@dataclass(frozen=True)
class Detections:
    """The detections of one image, highest score first.

    Attributes:
        boxes: float32 [N, 4], XYXY in the pixels of the original image (before the test resize).
        scores: float32 [N], in [0, 1].
        labels: int64 [N], indices into ``class_names``.
        class_names: the model's class names, one per label.
        category_ids: the dataset category id of each label (COCO results use them), one per label.
        image_size: (H, W) of the original image.
        image: the original image, uint8 [H, W, 3] RGB, where the caller gave or read one (``draw`` uses it).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    image_size: tuple[int, int]
    image: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for name in self.names:
            counts[name] = counts.get(name, 0) + 1
        found = ", ".join(f"{n} {name}" for name, n in counts.items()) or "nothing"
        return f"Detections({len(self)} in {self.image_size[0]}x{self.image_size[1]}: {found})"

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[label] for label in self.labels.tolist()]

    def above(self, score_thresh: float) -> Detections:
        """The detections with score >= ``score_thresh``."""
        if not 0.0 <= score_thresh <= 1.0:
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
        keep = self.scores >= score_thresh
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names,
                          self.category_ids, self.image_size, self.image)

    @property
    def boxes_xywh(self) -> torch.Tensor:
        """float32 [N, 4]: the boxes as (x, y, width, height), COCO's convention."""
        return box_convert(self.boxes, "xyxy", "xywh")

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO results entries: ``image_id``, ``category_id``, ``bbox`` XYWH (3 decimals), ``score`` (5 decimals)."""
        xywh = self.boxes_xywh.tolist()
        return [{"image_id": image_id, "category_id": self.category_ids[label], "bbox": [round(v, 3) for v in box],
                 "score": round(score, 5)}
                for box, score, label in zip(xywh, self.scores.tolist(), self.labels.tolist())]

    def draw(self, image: np.ndarray | None = None, score_thresh: float = 0.0) -> np.ndarray:
        """A copy of the image (``image``, else the one these detections hold), uint8 [H, W, 3] RGB, with the
        boxes of score >= ``score_thresh`` drawn and captioned ``"name score"``."""
        image = self.image if image is None else image
        if image is None:
            raise ValueError("these detections hold no image (they came from a loader that kept none): pass the "
                             "image to draw on")
        if tuple(image.shape[:2]) != tuple(self.image_size):
            raise ValueError(f"the image is {image.shape[0]}x{image.shape[1]} but the detections are in the pixels "
                             f"of a {self.image_size[0]}x{self.image_size[1]} image")
        return draw_detections(np.asarray(image), self.boxes, self.labels, self.scores, self.class_names,
                               score_thresh=score_thresh)


def detections_in_original_pixels(outputs: Sequence[dict[str, torch.Tensor]], image_sizes: torch.Tensor,
                                  orig_sizes: torch.Tensor, class_names: Sequence[str], category_ids: Sequence[int],
                                  images: Sequence[np.ndarray | None] | None = None) -> list[Detections]:
    """The model's per-image outputs (``boxes`` XYXY in the pixels of the resized image, ``scores``, ``labels``)
    as :class:`Detections` in original-image pixels.

    Args:
        outputs: one dict per image.
        image_sizes: int64 [B, 2], (h, w) of each resized image.
        orig_sizes: int64 [B, 2], (H, W) of each original image.
        images: the original images to keep with the detections (for ``draw``), or None.
    """
    result = []
    for i, output in enumerate(outputs):
        (h, w), (height, width) = image_sizes[i].tolist(), orig_sizes[i].tolist()
        scale = torch.tensor([width / w, height / h, width / w, height / h])
        result.append(Detections(
            boxes=output["boxes"].float().cpu() * scale, scores=output["scores"].float().cpu(),
            labels=output["labels"].cpu(), class_names=tuple(class_names), category_ids=tuple(category_ids),
            image_size=(height, width), image=None if images is None else images[i]))
    return result

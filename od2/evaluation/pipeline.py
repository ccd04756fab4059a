"""The one inference path: images resized as the test loader resizes them, batched and padded, run through the
test-time predictor the config asks for (the model, TEST.AUG or TEST.SLICE), and mapped back to original pixels as
:class:`~od2.evaluation.detections.Detections`.

``od2 eval`` (and training's evaluations), ``od2 predict`` (files, video, streams), :class:`od2.Detector` and
``od2 serve`` all run their images through an :class:`InferencePipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from od2.config import CfgNode
from od2.data.loader import collate_batch, image_test_item, resize_for_test
from od2.data.transforms import Transform
from od2.modeling.build import convert_for_inference

from .detections import Detections, detections_in_original_pixels
from .predictor import build_test_predictor

__all__ = ["InferencePipeline"]


class InferencePipeline:
    """Test-time inference of ``model`` as ``cfg`` asks for it.

    Args:
        cfg: the model's config (INPUT.*_TEST, INPUT.SIZE_DIVISIBILITY, INPUT.MAX_IMAGE_PIXELS, TEST.*).
        model: a detection model, ``(images uint8 [B, 3, H, W], image_sizes [B, 2]) -> per image dict(boxes,
            scores, labels)``, already on ``device``; converted in place for inference
            (:func:`od2.modeling.build.convert_for_inference`).
        class_names: one per label.
        category_ids: the dataset category id of each label; default label + 1.
        device: where the batches go.
    """

    def __init__(self, cfg: CfgNode, model: nn.Module, class_names: Sequence[str],
                 category_ids: Sequence[int] | None = None, device: torch.device | str = "cpu") -> None:
        self.model = convert_for_inference(model, cfg)
        self.predictor, (self.min_size, self.max_size) = build_test_predictor(cfg, self.model)
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{len(self.category_ids)} category ids for {len(self.class_names)} class names")
        self.device = torch.device(device)
        self.size_divisibility = int(cfg.INPUT.SIZE_DIVISIBILITY)
        self.max_pixels = cfg.INPUT.MAX_IMAGE_PIXELS
        self.batch_size = int(cfg.TEST.IMS_PER_BATCH)

    @property
    def resize(self) -> tuple[int | None, int]:
        """(min_size or None for the original size, max_size): what the test loader must resize images to."""
        return self.min_size, self.max_size

    @property
    def transforms(self) -> Transform:
        """The test resize as a transform (what the test loader and :meth:`prepare` apply)."""
        return resize_for_test(self.min_size, self.max_size)

    @property
    def computes_losses(self) -> bool:
        """Whether :meth:`detect_batch` can also give the training losses: a plain model (no TTA, no slicing) with
        RetinaNet's ``raw_outputs``, ``postprocess`` and ``losses``."""
        return self.predictor is self.model and all(hasattr(self.model, name) for name in
                                                    ("raw_outputs", "postprocess", "losses", "normalize"))

    def prepare(self, image: np.ndarray, image_id: int = 0) -> dict[str, Any]:
        """A test item of an image in memory (uint8 [H, W, 3] RGB), resized as the test loader resizes files."""
        return image_test_item(image, self.transforms, image_id)

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Test items as one batch, padded to the model's size divisibility."""
        return collate_batch(items, self.size_divisibility)

    @torch.no_grad()
    def detect_batch(self, batch: dict[str, Any], images: Sequence[np.ndarray | None] | None = None,
                     losses: bool = False) -> tuple[list[Detections], dict[str, torch.Tensor] | None]:
        """``(detections per image, losses or None)`` of a collated test batch (``images`` uint8 [B, 3, H, W],
        ``image_sizes`` and ``orig_sizes`` int64 [B, 2]; with ``losses`` also ``boxes`` and ``labels``).

        ``images``: the original images to keep with the detections (for ``Detections.draw``). With ``losses``
        (needs :attr:`computes_losses`), the training losses against the batch's boxes come from the same forward,
        in eval mode."""
        pixels = batch["images"].to(self.device, non_blocking=True)  # asynchronous from a pinned batch
        image_sizes = batch["image_sizes"].to(self.device, non_blocking=True)
        batch_losses = None
        if losses:
            if not self.computes_losses:
                raise ValueError("losses need the plain model (no TEST.AUG or TEST.SLICE) with RetinaNet's "
                                 "raw_outputs and losses")
            raw = self.model.raw_outputs(self.model.normalize(pixels))
            outputs = self.model.postprocess(*raw, image_sizes)
            batch_losses = self.model.losses(*raw, [b.to(self.device) for b in batch["boxes"]],
                                             [lab.to(self.device) for lab in batch["labels"]], image_sizes)
        else:
            outputs = self.predictor(pixels, image_sizes)
        detections = detections_in_original_pixels(outputs, batch["image_sizes"], batch["orig_sizes"],
                                                   self.class_names, self.category_ids, images)
        return detections, batch_losses

    def detect_images(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections of images in memory (uint8 [H, W, 3] RGB), in batches of TEST.IMS_PER_BATCH; each result
        keeps its image for ``draw``."""
        results: list[Detections] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(images), max(self.batch_size, 1)):
                chunk = images[start:start + max(self.batch_size, 1)]
                batch = self.collate([self.prepare(image) for image in chunk])
                results.extend(self.detect_batch(batch, images=chunk)[0])
        finally:
            self.model.train(was_training)
        return results

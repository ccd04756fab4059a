"""ONNX export of a RetinaNet with its postprocessing (decode, score threshold, class-wise NMS) inside the graph.

The exported graph takes one image of a fixed size, the size it was exported at (the model's anchors are
constants for it):

    inputs   images      uint8 [1, 3, H, W]  RGB, 0-255, the content at the top-left, zero padding bottom/right
             image_size  int64 [2]           (h, w) of the content, for clipping boxes
    outputs  boxes       float32 [M, 4]      XYXY in the pixels of ``images``
             scores      float32 [M]         sorted by decreasing score, M <= TEST.DETECTIONS_PER_IMAGE
             labels      int64 [M]           contiguous class labels

Preparing an image as od2 does: resize so the short side is INPUT.MIN_SIZE_TEST and the long side at most
INPUT.MAX_SIZE_TEST (keeping the aspect ratio), paste it top-left into an H x W zero canvas, and divide the
output boxes by the resize factor to get original-image pixels (:func:`prepare_image` does exactly this).
Exported with PyTorch's TorchScript-based exporter (opset 17), which maps torchvision's NMS to ONNX
NonMaxSuppression.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from od2.data.transforms import resize_image, resized_hw

logger = logging.getLogger(__name__)

__all__ = ["ExportableRetinaNet", "export_onnx", "prepare_image"]

OPSET = 17


class ExportableRetinaNet(nn.Module):
    """A RetinaNet's inference path for one image: ``(images, image_size) -> (boxes, scores, labels)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 ``images`` [1, 3, H, W], int64 ``image_size`` [2] -> boxes [M, 4], scores [M], labels [M] from
        the model's own :meth:`~od2.modeling.retinanet.RetinaNet.inference`."""
        result = self.model.inference(images, image_size.reshape(1, 2))[0]
        return result["boxes"], result["scores"], result["labels"]


def prepare_image(image: np.ndarray, min_size: int, max_size: int, canvas_hw: tuple[int, int],
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """uint8 [H, W, 3] RGB -> (``images`` uint8 [1, 3, *canvas_hw], ``image_size`` int64 [2], scale) as the exported
    graph expects; original-image boxes = output boxes / scale. Raises ValueError if the resized image does not fit
    the canvas (export at a larger size)."""
    height, width = image.shape[:2]
    h, w = resized_hw(height, width, min_size, max_size)
    if h > canvas_hw[0] or w > canvas_hw[1]:
        raise ValueError(f"a {height}x{width} image resizes to {h}x{w}, larger than the exported {canvas_hw}")
    canvas = np.zeros((1, 3, *canvas_hw), np.uint8)
    canvas[0, :, :h, :w] = np.asarray(resize_image(image, h, w)).transpose(2, 0, 1)
    return canvas, np.array([h, w], np.int64), h / height


def export_onnx(model: nn.Module, path: str | os.PathLike, height: int, width: int,
                metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (put in eval mode on the CPU, in place) with postprocessing as ONNX for ``height`` x
    ``width`` inputs, with ``metadata`` as the model's metadata_props (e.g. class names as JSON); checks the file
    with ``onnx.checker``. Returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableRetinaNet(model.cpu().eval().to(memory_format=torch.contiguous_format)).eval()
    images = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    image_size = torch.tensor([height, width], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python int it freezes (anchor grids, level sizes): expected for a fixed-size
        # export, and the result is checked against PyTorch by `od2 export` and the tests.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit.script inside the legacy exporter
        torch.onnx.export(wrapper, (images, image_size), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images", "image_size"], output_names=["boxes", "scores", "labels"])
    if metadata:
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    logger.info("exported %s (%dx%d input, opset %d, %.1f MB)", path, height, width, OPSET,
                path.stat().st_size / 1e6)
    return path

"""ONNX export of a RetinaNet with its postprocessing (decode, score threshold, class-wise NMS) inside the graph.

The default graph takes one image of a fixed size, the size it was exported at (the model's anchors are
constants for it):

    inputs   images      uint8 [1, 3, H, W]  RGB, 0-255, the content at the top-left, zero padding bottom/right
             image_size  int64 [2]           (h, w) of the content, for clipping boxes
    outputs  boxes       float32 [M, 4]      XYXY in the pixels of ``images``
             scores      float32 [M]         sorted by decreasing score, M <= TEST.DETECTIONS_PER_IMAGE
             labels      int64 [M]           contiguous class labels

Preparing an image as od2 does: resize so the short side is INPUT.MIN_SIZE_TEST and the long side at most
INPUT.MAX_SIZE_TEST (keeping the aspect ratio), paste it top-left into an H x W zero canvas, and divide the
output boxes by the resize factor to get original-image pixels (:func:`prepare_image` does exactly this).
With ``dynamic=True`` (``od2 export --dynamic``) batch size, height and width are dynamic axes (anchors, top-k and
the per-image detection cap and the TF-'SAME' paddings of EfficientNet backbones are computed in the graph from
the input's shape):

    inputs   images       uint8 [B, 3, H, W]  as above, any H and W (images of a batch padded to one canvas)
             image_sizes  int64 [B, 2]        (h, w) of each image's content
    outputs  boxes        float32 [N, 4]      every image's detections, grouped by image in batch order
             scores       float32 [N]         decreasing within an image, at most TEST.DETECTIONS_PER_IMAGE each
             labels       int64 [N]
             image_index  int64 [N]           the batch index each detection belongs to

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

__all__ = ["DynamicExportableRetinaNet", "ExportableRetinaNet", "export_onnx", "max_detection_difference",
           "prepare_image"]

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


class DynamicExportableRetinaNet(nn.Module):
    """A RetinaNet's batched inference path: ``(images, image_sizes) -> (boxes, scores, labels, image_index)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 ``images`` [B, 3, H, W], int64 ``image_sizes`` [B, 2] -> flat boxes [N, 4], scores [N], labels [N],
        image_index [N] from :meth:`~od2.modeling.retinanet.RetinaNet.inference_flat`."""
        result = self.model.inference_flat(images, image_sizes)
        return result["boxes"], result["scores"], result["labels"], result["image_index"]


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
                metadata: dict[str, str] | None = None, dynamic: bool = False) -> Path:
    """Write ``model`` (put in eval mode on the CPU, in place) with postprocessing as ONNX for ``height`` x
    ``width`` inputs (with ``dynamic``: traced at that size, batch and size dynamic), with ``metadata`` as the
    model's metadata_props (e.g. class names as JSON); checks the file with ``onnx.checker``. Returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    images = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    if dynamic:
        wrapper = DynamicExportableRetinaNet(model).eval()
        inputs = (images, torch.tensor([[height, width]], dtype=torch.int64))
        names = {"input_names": ["images", "image_sizes"],
                 "output_names": ["boxes", "scores", "labels", "image_index"],
                 "dynamic_axes": {"images": {0: "batch", 2: "height", 3: "width"}, "image_sizes": {0: "batch"},
                                  "boxes": {0: "detections"}, "scores": {0: "detections"},
                                  "labels": {0: "detections"}, "image_index": {0: "detections"}}}
    else:
        wrapper = ExportableRetinaNet(model).eval()
        inputs = (images, torch.tensor([height, width], dtype=torch.int64))
        names = {"input_names": ["images", "image_size"], "output_names": ["boxes", "scores", "labels"]}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python int it freezes (the fixed export's anchor grids and level sizes; in the
        # dynamic export only the batch-independent constants): the result is checked against PyTorch by
        # `od2 export` and the tests.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit.script inside the legacy exporter
        torch.onnx.export(wrapper, inputs, str(path), dynamo=False, opset_version=OPSET, **names)
    if metadata:
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    logger.info("exported %s (%s input, opset %d, %.1f MB)", path,
                "dynamic batch and size" if dynamic else f"{height}x{width}", OPSET, path.stat().st_size / 1e6)
    return path


def max_detection_difference(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, image_index: np.ndarray,
                             reference: dict[str, torch.Tensor], score_tol: float = 1e-5) -> float:
    """How far an exported graph's flat detections (``boxes`` [N, 4], ``scores``, ``labels``, ``image_index`` [N])
    are from PyTorch's ``reference`` (:meth:`~od2.modeling.retinanet.RetinaNet.inference_flat`): the largest
    distance in pixels from a box to the nearest reference box of its image and label whose score is within
    ``score_tol``; ``inf`` when the counts per image and label differ or a box has no such partner.

    Detections are matched as sets because two runtimes may order detections of near-equal scores (1e-7 apart)
    differently, and NMS and the per-image cap then keep the same set in another order."""
    ref = {key: value.detach().cpu().numpy() for key, value in reference.items()}
    keys, ref_keys = np.stack([image_index, labels], 1), np.stack([ref["image_index"], ref["labels"]], 1)
    if len(keys) != len(ref_keys):
        return float("inf")
    if not len(keys):
        return 0.0
    got_count, ref_count = np.unique(keys, axis=0, return_counts=True), np.unique(ref_keys, axis=0, return_counts=True)
    if not (np.array_equal(got_count[0], ref_count[0]) and np.array_equal(got_count[1], ref_count[1])):
        return float("inf")
    worst = 0.0
    for box, score, key in zip(boxes, scores, keys):
        partner = (ref_keys == key).all(1) & (np.abs(ref["scores"] - score) <= score_tol)
        if not partner.any():
            return float("inf")
        worst = max(worst, float(np.abs(ref["boxes"][partner] - box).max(1).min()))
    return worst

"""The test-time predictor a config asks for: the model itself or test-time augmentation (TEST.AUG), and how the
test loader must resize images for it."""

from __future__ import annotations

from torch import nn

from od2.config import CfgNode

from .tta import TestTimeAugmentation, tta_max_size


def build_test_predictor(cfg: CfgNode, model: nn.Module) -> tuple[nn.Module, tuple[int | None, int]]:
    """``(predictor, (min_size or None, max_size))``: a module with the model's calling convention, ``(images,
    image_sizes) -> per image dict(boxes, scores, labels)`` in the pixels of images, and the resize the test
    loader applies before it.

    - TEST.AUG.ENABLED false: ``model``, at INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST;
    - TEST.AUG.ENABLED: :class:`~od2.evaluation.tta.TestTimeAugmentation`, the loader at the largest test size
      (each view is then a downscale of it).
    """
    aug, test_input = cfg.TEST.AUG, cfg.INPUT
    nms_thresh, max_detections = cfg.MODEL.RETINANET.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
    if aug.ENABLED:
        min_sizes = list(aug.MIN_SIZES) or [test_input.MIN_SIZE_TEST]
        max_sizes = [tta_max_size(size, aug.MAX_SIZE, test_input.MIN_SIZE_TEST, test_input.MAX_SIZE_TEST)
                     for size in min_sizes]
        predictor = TestTimeAugmentation(model, min_sizes, max_sizes, flip=aug.FLIP, iou_thresh=nms_thresh,
                                         max_detections=max_detections,
                                         size_divisibility=test_input.SIZE_DIVISIBILITY)
        largest = max(range(len(min_sizes)), key=lambda i: min_sizes[i])
        return predictor, (min_sizes[largest], max_sizes[largest])
    return model, (test_input.MIN_SIZE_TEST, test_input.MAX_SIZE_TEST)

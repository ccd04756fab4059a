"""The test-time predictor a config asks for: the model itself, test-time augmentation (TEST.AUG) or sliced
inference (TEST.SLICE), and how the test loader must resize images for it."""

from __future__ import annotations

from torch import nn

from od2.config import CfgNode, ConfigError, check_choice

from .slicing import SLICE_MERGES, SlicedInference
from .tta import TestTimeAugmentation, tta_max_size


def build_test_predictor(cfg: CfgNode, model: nn.Module) -> tuple[nn.Module, tuple[int | None, int]]:
    """``(predictor, (min_size or None, max_size))``: a module with the model's calling convention, ``(images,
    image_sizes) -> per image dict(boxes, scores, labels)`` in the pixels of images, and the resize the test
    loader applies before it.

    - neither TEST.AUG nor TEST.SLICE enabled: ``model``, at INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST;
    - TEST.AUG.ENABLED: :class:`~od2.evaluation.tta.TestTimeAugmentation`, the loader at the largest test size
      (each view is then a downscale of it);
    - TEST.SLICE.ENABLED: :class:`~od2.evaluation.slicing.SlicedInference`, the loader at the original size.

    Raises:
        ConfigError: both enabled, or TEST.SLICE.SIZE not two numbers.
    """
    aug, slicing, test_input = cfg.TEST.AUG, cfg.TEST.SLICE, cfg.INPUT
    if aug.ENABLED and slicing.ENABLED:
        raise ConfigError("TEST.AUG.ENABLED and TEST.SLICE.ENABLED are both true: enable one of them (test-time "
                          "augmentation of each tile is not supported)")
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
    if slicing.ENABLED:
        if len(slicing.SIZE) != 2:
            raise ConfigError(f"TEST.SLICE.SIZE must be [height, width] of a tile, got {list(slicing.SIZE)}")
        check_choice("TEST.SLICE.MERGE", slicing.MERGE, SLICE_MERGES)
        predictor = SlicedInference(model, tuple(slicing.SIZE), slicing.OVERLAP, full_image=slicing.FULL_IMAGE,
                                    min_size=test_input.MIN_SIZE_TEST, max_size=test_input.MAX_SIZE_TEST,
                                    ios_thresh=slicing.MATCH_THRESH, iou_thresh=nms_thresh, merge=slicing.MERGE,
                                    max_detections=max_detections,
                                    size_divisibility=test_input.SIZE_DIVISIBILITY)
        return predictor, (None, test_input.MAX_SIZE_TEST)
    return model, (test_input.MIN_SIZE_TEST, test_input.MAX_SIZE_TEST)

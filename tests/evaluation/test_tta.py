"""Test-time augmentation: flipped and resized views map back to the image's pixels, and the merge leaves no
duplicates."""

from __future__ import annotations

import pytest
import torch
from rectangles import RectangleDetector, as_batch, draw_rectangles
from torchvision.ops import box_iou

from od2.config import ConfigError, load_config
from od2.evaluation.predictor import build_test_predictor
from od2.evaluation.slicing import SlicedInference
from od2.evaluation.tta import TestTimeAugmentation


class ConstantBox(torch.nn.Module):
    """Whatever it is shown, one detection at [10, 20, 30, 40] (label 3, score 0.8) in its input's pixels."""

    num_classes = 5

    def forward(self, images, image_sizes):
        self.seen = getattr(self, "seen", []) + [(tuple(images.shape), image_sizes.tolist())]
        return [{"boxes": torch.tensor([[10.0, 20, 30, 40]]), "scores": torch.tensor([0.8]),
                 "labels": torch.tensor([3])} for _ in images]


def test_each_view_maps_back_by_the_flip_and_resize_formulas():
    model = ConstantBox()
    tta = TestTimeAugmentation(model, [50, 100], [1000, 1000], flip=True, iou_thresh=1.0, max_detections=10)
    images = torch.zeros(1, 3, 128, 224, dtype=torch.uint8)  # content 100 x 200, padded as a loader pads
    result = tta(images, torch.tensor([[100, 200]]))[0]
    # size 50: a 50 x 100 view, boxes x2; flipped: x -> 100 - x, left and right swap. Size 100: the content itself.
    expected = {(20.0, 40.0, 60.0, 80.0), (140.0, 40.0, 180.0, 80.0), (10.0, 20.0, 30.0, 40.0),
                (170.0, 20.0, 190.0, 40.0)}
    assert {tuple(box) for box in result["boxes"].tolist()} == expected
    assert result["labels"].tolist() == [3] * 4
    # one batch per size, the flip beside the view, padded to a multiple of 32
    assert model.seen == [((2, 3, 64, 128), [[50, 100], [50, 100]]), ((2, 3, 128, 224), [[100, 200], [100, 200]])]


def test_a_rendered_rectangle_comes_back_once_at_its_place():
    truth = [37, 21, 121, 70]  # off-centre, so that an unmapped flip would land elsewhere
    images, sizes = as_batch(draw_rectangles(100, 200, [truth], [2]))
    tta = TestTimeAugmentation(RectangleDetector(), [60, 100, 140], [1000, 1000, 1000], flip=True, iou_thresh=0.5,
                               max_detections=100)
    result = tta(images, sizes)[0]
    assert result["labels"].tolist() == [2]
    # each view sees the edges to within a pixel of its own grid: at most 100 / 60 px here
    torch.testing.assert_close(result["boxes"][0], torch.tensor(truth, dtype=torch.float32), atol=100 / 60, rtol=0)


def test_merged_detections_of_a_real_model_have_no_same_class_duplicates(confident_model):
    images = torch.randint(0, 256, (1, 3, 192, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tta = TestTimeAugmentation(confident_model, [128, 192], [320, 320], flip=True, iou_thresh=0.5,
                               max_detections=100)
    result = tta(images, torch.tensor([[192, 256]]))[0]
    plain = confident_model(images, torch.tensor([[192, 256]]))[0]
    assert len(result["boxes"]) == 100 and len(plain["boxes"]) == 100
    same_class = result["labels"][:, None] == result["labels"][None]
    iou = box_iou(result["boxes"], result["boxes"]).masked_fill(torch.eye(100, dtype=torch.bool), 0)
    iou = iou.nan_to_num(0.0)  # two empty boxes (clipped flat at the border) have IoU 0 / 0, and NMS keeps both
    assert iou[same_class].max() <= 0.5
    assert (result["scores"][:-1] >= result["scores"][1:]).all()


def test_config_builds_the_wrapper_and_the_loader_resize():
    cfg = load_config(None, ["TEST.AUG.ENABLED=True", "TEST.AUG.MIN_SIZES=[160,224]", "INPUT.MIN_SIZE_TEST=192",
                             "INPUT.MAX_SIZE_TEST=320"])
    model = ConstantBox()
    predictor, resize = build_test_predictor(cfg, model)
    assert isinstance(predictor, TestTimeAugmentation) and predictor.model is model
    # MAX_SIZE 0: INPUT.MAX_SIZE_TEST scaled by size / INPUT.MIN_SIZE_TEST, 320 * 224 / 192 = 373.3
    assert predictor.max_sizes == [267, 373] and predictor.flip
    assert resize == (224, 373)  # the loader delivers the largest view; the others are downscales of it
    plain, plain_resize = build_test_predictor(load_config(None, ["INPUT.MIN_SIZE_TEST=192"]), model)
    assert plain is model and plain_resize == (192, 1333)
    sliced, slice_resize = build_test_predictor(load_config(None, ["TEST.SLICE.ENABLED=True"]), model)
    assert isinstance(sliced, SlicedInference) and slice_resize[0] is None  # tiles come from the original pixels
    default_sizes, _ = build_test_predictor(load_config(None, ["TEST.AUG.ENABLED=True"]), model)
    assert default_sizes.min_sizes == [576]  # INPUT.MIN_SIZE_TEST


@pytest.mark.parametrize("override, message", [
    ("TEST.AUG.MIN_SIZES=[0,200]", "TEST.AUG.MIN_SIZES"),
    ("TEST.AUG.MAX_SIZE=-1", "TEST.AUG.MAX_SIZE"),
    ("TEST.AUG.FLIP=3", "TEST.AUG.FLIP"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_augmentation_and_slicing_together_is_an_error():
    cfg = load_config(None, ["TEST.AUG.ENABLED=True", "TEST.SLICE.ENABLED=True"])
    with pytest.raises(ConfigError, match="TEST.AUG.ENABLED and TEST.SLICE.ENABLED"):
        build_test_predictor(cfg, ConstantBox())


def test_off_by_default():
    cfg = load_config(None, [])
    assert not cfg.TEST.AUG.ENABLED and not cfg.TEST.SLICE.ENABLED

"""detect_padded (the sync-free postprocess) against torchvision's batched_nms path and a greedy NMS reference."""

from __future__ import annotations

import pytest
import torch
from test_postprocess import SETTINGS, random_inputs, reference_detect
from torchvision.ops import batched_nms

from od2.modeling.box_coder import BoxCoder
from od2.modeling.postprocess import detect, detect_padded, unpad


def as_set(detections: dict[str, torch.Tensor]) -> list[tuple]:
    return sorted((round(s, 5), int(c), *[round(v, 3) for v in b]) for s, c, b in
                  zip(detections["scores"].tolist(), detections["labels"].tolist(), detections["boxes"].tolist()))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("settings", SETTINGS)
def test_padded_matches_the_per_image_reference(seed, settings):
    logits, deltas, anchors, image_sizes = random_inputs(seed)
    padded = detect_padded(logits, deltas, anchors, image_sizes, BoxCoder(), **settings)
    assert bool(padded["converged"])
    got = unpad(padded)
    ref = reference_detect(logits, deltas, anchors, image_sizes, **settings)
    for g, r in zip(got, ref):
        assert g["boxes"].dtype == torch.float32 and g["labels"].dtype == torch.int64
        torch.testing.assert_close(g["scores"], r["scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(g["boxes"], r["boxes"], rtol=1e-5, atol=1e-4)
        assert torch.equal(g["labels"], r["labels"])


def test_padded_output_is_padded_after_count():
    logits, deltas, anchors, image_sizes = random_inputs(0)
    for lg in logits:
        lg[1] = -20.0  # the second image has no score above the threshold
    padded = detect_padded(logits, deltas, anchors, image_sizes, BoxCoder(), **SETTINGS[1])
    batch, slots = padded["scores"].shape
    assert (batch, slots) == (2, 25) and padded["boxes"].shape == (2, 25, 4) and padded["labels"].shape == (2, 25)
    assert padded["count"].tolist()[1] == 0 and 0 < padded["count"].tolist()[0] <= 25
    for i, count in enumerate(padded["count"].tolist()):
        assert torch.isneginf(padded["scores"][i, count:]).all() and torch.isfinite(padded["scores"][i, :count]).all()
    assert unpad(padded)[1]["boxes"].shape == (0, 4)


def greedy_clusters(seed: int, batch: int = 2, count: int = 300, classes: int = 3):
    """Boxes [B, N, 4] in a few tight clusters, so that suppressions chain (i suppresses j, which would suppress
    k), their logits [B, N] and labels [B, N]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 6, 2, generator=g) * 200 + 50
    which = torch.randint(0, 6, (batch, count), generator=g)
    xy = centres.gather(1, which[..., None].expand(-1, -1, 2)) + torch.randn(batch, count, 2, generator=g) * 6
    wh = 30 + torch.rand(batch, count, 2, generator=g) * 20
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1).clamp(min=0)
    boxes = BoxCoder().decode(boxes, torch.zeros_like(boxes))  # as detect_padded decodes them from zero deltas
    logits = torch.logit(0.01 + 0.98 * torch.rand(batch, count, generator=g))
    return boxes, logits, torch.randint(0, classes, (batch, count), generator=g)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_padded_nms_equals_batched_nms_on_crowded_boxes(seed, iou):
    """One level of one anchor per box with zero deltas, so detect_padded's NMS sees exactly these boxes (the
    other classes' logits are far below the score threshold)."""
    boxes, box_logits, labels = greedy_clusters(seed)
    batch, count, classes = *box_logits.shape, 3
    scores = box_logits.sigmoid()
    logits = torch.full((batch, count, classes), -30.0).scatter_(2, labels[..., None], box_logits[..., None])
    image_sizes = torch.tensor([[400, 400]] * batch)
    outs = []
    for b in range(batch):  # the anchors are per image here, so one image at a time
        padded = detect_padded([logits[b:b + 1]], [torch.zeros(1, count, 4)], [boxes[b]], image_sizes[b:b + 1],
                               BoxCoder(), score_thresh=0.005, topk=count * classes, nms_thresh=iou,
                               max_detections=count, rounds=48)
        assert bool(padded["converged"])
        outs.append(unpad(padded)[0])
        keep = batched_nms(boxes[b], scores[b], labels[b], iou)
        expected = {"boxes": boxes[b][keep], "scores": scores[b][keep], "labels": labels[b][keep]}
        assert len(keep) < 0.8 * count  # crowded: many boxes are suppressed
        assert as_set(outs[-1]) == as_set(expected)


def test_too_few_rounds_are_reported_and_the_model_falls_back():
    boxes, box_logits, labels = greedy_clusters(0, batch=1)
    count = box_logits.shape[1]
    logits = torch.full((1, count, 3), -30.0).scatter_(2, labels[..., None], box_logits[..., None])
    args = ([logits], [torch.zeros(1, count, 4)], [boxes[0]], torch.tensor([[400, 400]]), BoxCoder())
    settings = dict(score_thresh=0.005, topk=count * 3, nms_thresh=0.5, max_detections=count)
    assert unpad(detect_padded(*args, **settings, rounds=1)) is None  # one round cannot resolve the chains
    assert unpad(detect_padded(*args, **settings, rounds=48)) is not None


def test_padded_matches_detect_on_a_models_outputs(confident_model):
    """The digits model with its class prior at 0.5: 100 detections per image from thousands of overlapping
    candidates, compared with the batched_nms path."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8, generator=g)
    image_sizes = torch.tensor([[128, 160], [100, 130]])
    with torch.no_grad():
        raw = confident_model.raw_outputs(confident_model.normalize(images))
    settings = dict(score_thresh=confident_model.score_thresh, topk=confident_model.topk_candidates,
                    nms_thresh=confident_model.nms_thresh, max_detections=confident_model.max_detections)
    padded = detect_padded(*raw, image_sizes, confident_model.box_coder, **settings)
    expected = detect(*raw, image_sizes, confident_model.box_coder, **settings)
    got = unpad(padded)
    assert got is not None
    for g_, e in zip(got, expected):
        assert len(e["scores"]) == settings["max_detections"]
        torch.testing.assert_close(g_["scores"], e["scores"], rtol=0, atol=0)
        torch.testing.assert_close(g_["boxes"], e["boxes"], rtol=0, atol=0)
        assert torch.equal(g_["labels"], e["labels"])

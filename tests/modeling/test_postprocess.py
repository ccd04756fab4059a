"""detect() against a per-image, class-by-class reference built from torchvision (original-spec §3.9)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import clip_boxes_to_image, nms

from od2.modeling.anchors import AnchorGenerator
from od2.modeling.box_coder import BoxCoder
from od2.modeling.postprocess import chunked_topk, detect

K, A = 4, 3
SIZES = [(8, 8), (4, 4), (2, 2)]
STRIDES = [8, 16, 32]


def reference_detect(logits, deltas, anchors, image_sizes, *, score_thresh, topk, nms_thresh, max_detections):
    coder = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    results = []
    for b in range(image_sizes.shape[0]):
        h, w = image_sizes[b].tolist()
        boxes_all, scores_all, labels_all = [], [], []
        for lg, dl, anc in zip(logits, deltas, anchors):
            scores = torch.sigmoid(lg[b]).flatten()
            top_scores, top_idx = scores.topk(min(topk, scores.numel()))
            keep = top_scores > score_thresh
            top_scores, top_idx = top_scores[keep], top_idx[keep]
            anchor_idx, labels = top_idx // K, top_idx % K
            boxes = coder.decode_single(dl[b][anchor_idx], anc[anchor_idx])
            boxes_all.append(clip_boxes_to_image(boxes, (h, w)))
            scores_all.append(top_scores)
            labels_all.append(labels)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        kept_b, kept_s, kept_l = [], [], []
        for c in range(K):
            mine = labels == c
            keep = nms(boxes[mine], scores[mine], nms_thresh)
            kept_b.append(boxes[mine][keep])
            kept_s.append(scores[mine][keep])
            kept_l.append(labels[mine][keep])
        boxes, scores, labels = torch.cat(kept_b), torch.cat(kept_s), torch.cat(kept_l)
        order = scores.argsort(descending=True)
        results.append({"boxes": boxes[order], "scores": scores[order], "labels": labels[order],
                        "before_cap": len(order)})
        for key in ("boxes", "scores", "labels"):
            results[-1][key] = results[-1][key][:max_detections]
    return results


def random_inputs(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    anchors = AnchorGenerator([[24.0, 32.0, 40.0]], [[1.0]], STRIDES)(SIZES, torch.device("cpu"))
    anchors = [a.clone() for a in anchors]
    logits = [torch.randn(batch, h * w * A, K, generator=g) * 2 - 1 for h, w in SIZES]
    deltas = [torch.randn(batch, h * w * A, 4, generator=g) * 0.3 for h, w in SIZES]
    image_sizes = torch.tensor([[60, 50], [64, 64], [30, 64]][:batch])
    return logits, deltas, anchors, image_sizes


SETTINGS = [
    dict(score_thresh=0.05, topk=1000, nms_thresh=0.5, max_detections=100),
    dict(score_thresh=0.3, topk=40, nms_thresh=0.3, max_detections=25),
    dict(score_thresh=0.0, topk=5, nms_thresh=0.7, max_detections=100),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("settings", SETTINGS)
def test_detect_matches_reference(seed, settings):
    logits, deltas, anchors, image_sizes = random_inputs(seed)
    got = detect(logits, deltas, anchors, image_sizes, BoxCoder(), **settings)
    ref = reference_detect(logits, deltas, anchors, image_sizes, **settings)
    assert len(got) == 2
    for g, r, (h, w) in zip(got, ref, image_sizes.tolist()):
        assert g["boxes"].shape == r["boxes"].shape
        assert g["boxes"].dtype == torch.float32 and g["scores"].dtype == torch.float32
        assert g["labels"].dtype == torch.int64
        assert len(g["scores"]) <= settings["max_detections"]
        torch.testing.assert_close(g["scores"], r["scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(g["boxes"], r["boxes"], rtol=1e-5, atol=1e-4)
        assert torch.equal(g["labels"], r["labels"])
        assert (g["scores"][:-1] >= g["scores"][1:]).all()
        assert (g["boxes"][:, 0::2] <= w).all() and (g["boxes"][:, 1::2] <= h).all() and (g["boxes"] >= 0).all()
    if settings["max_detections"] == 100 and settings["topk"] == 1000:
        assert max(r["before_cap"] for r in ref) > 100  # the cap was exercised


def test_detect_matches_reference_as_sets_with_ties():
    """Scores tied across classes/levels: compare the detections as sets."""
    logits, deltas, anchors, image_sizes = random_inputs(3)
    logits = [(lg * 2).round() / 2 for lg in logits]  # many exact ties
    settings = SETTINGS[0]
    got = detect(logits, deltas, anchors, image_sizes, BoxCoder(), **dict(settings, max_detections=10000))
    ref = reference_detect(logits, deltas, anchors, image_sizes, **dict(settings, max_detections=10000))

    def as_set(d):
        return sorted((round(s, 5), int(c), *[round(v, 3) for v in b])
                      for s, c, b in zip(d["scores"].tolist(), d["labels"].tolist(), d["boxes"].tolist()))
    for g, r in zip(got, ref):
        assert as_set(g) == as_set(r)


def test_images_without_confident_scores_are_empty():
    logits, deltas, anchors, image_sizes = random_inputs(0)
    for lg in logits:
        lg[1] = -20.0  # second image: every score ~2e-9
    got = detect(logits, deltas, anchors, image_sizes, BoxCoder(), **SETTINGS[0])
    assert len(got[0]["scores"]) > 0
    empty = got[1]
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["scores"].shape == (0,) and empty["scores"].dtype == torch.float32
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    # and a whole batch without detections
    for lg in logits:
        lg[:] = -20.0
    for d in detect(logits, deltas, anchors, image_sizes, BoxCoder(), **SETTINGS[0]):
        assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["labels"].shape == (0,)
        assert d["labels"].dtype == torch.int64 and d["boxes"].dtype == torch.float32


def test_nms_is_per_class():
    """Two identical boxes of different classes both survive; of the same class only the better one."""
    anchors = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [10.0, 10.0, 30.0, 30.0]])]
    deltas = [torch.zeros(1, 2, 4)]
    logits = [torch.full((1, 2, 2), -20.0)]
    logits[0][0, 0, 0], logits[0][0, 1, 1] = 2.0, 1.0  # same box, classes 0 and 1
    out = detect(logits, deltas, anchors, torch.tensor([[64, 64]]), BoxCoder(), score_thresh=0.05, topk=10,
                 nms_thresh=0.5, max_detections=100)[0]
    assert out["labels"].tolist() == [0, 1]
    logits[0][0, 1, 0], logits[0][0, 1, 1] = 1.0, -20.0  # now both class 0
    out = detect(logits, deltas, anchors, torch.tensor([[64, 64]]), BoxCoder(), score_thresh=0.05, topk=10,
                 nms_thresh=0.5, max_detections=100)[0]
    assert out["labels"].tolist() == [0]
    assert out["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


def test_detect_does_not_modify_its_inputs():
    logits, deltas, anchors, image_sizes = random_inputs(0)
    copies = [[t.clone() for t in group] for group in (logits, deltas, anchors)]
    detect(logits, deltas, anchors, image_sizes, BoxCoder(), **SETTINGS[0])
    for group, saved in zip((logits, deltas, anchors), copies):
        for t, c in zip(group, saved):
            assert torch.equal(t, c)


@pytest.mark.parametrize("batch,n,k", [(1, 5_000_000, 1000), (3, 2_100_001, 1000), (2, 1000, 1000), (2, 50, 1000),
                                       (1, 2_500_000, 1_000_000)])
def test_chunked_topk_matches_topk(batch, n, k):
    g = torch.Generator().manual_seed(n)
    values = torch.randn(batch, n, generator=g)
    best, idx = chunked_topk(values, k)
    expected, _ = values.topk(min(k, n), dim=1)
    assert torch.equal(best, expected)
    assert torch.equal(values.gather(1, idx), best)
    assert all(row.unique().numel() == row.numel() for row in idx)  # every index once

"""Matcher against a per-image Python loop of the rule and torchvision's Matcher (original-spec §3.6)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from od2.modeling.matcher import IGNORE, NEGATIVE, POSITIVE, Matcher, batched_box_iou, pad_boxes

LOW, HIGH = 0.4, 0.5


def reference_match(iou: list[list[float]], num_anchors: int) -> tuple[list[int], list[int]]:
    """iou[g][a] for one image -> (matched gt index, state) per anchor, written as a plain loop."""
    num_gt = len(iou)
    idx, state = [0] * num_anchors, [NEGATIVE] * num_anchors
    for a in range(num_anchors):
        if num_gt == 0:
            continue
        best, best_g = iou[0][a], 0
        for g in range(1, num_gt):
            if iou[g][a] > best:  # ties: first gt wins
                best, best_g = iou[g][a], g
        idx[a] = best_g
        state[a] = POSITIVE if best >= HIGH else NEGATIVE if best < LOW else IGNORE
    for g in range(num_gt):  # low-quality matches
        gt_best = max(iou[g])
        if gt_best > 0:
            for a in range(num_anchors):
                if iou[g][a] == gt_best:
                    state[a] = POSITIVE  # keeps idx[a], its own best gt
    return idx, state


def random_boxes(n: int, g: torch.Generator, extent: float = 64.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent / 2 + 2
    return torch.cat([xy, xy + wh], dim=1)


def make_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    anchors = random_boxes(60, g)
    anchors = torch.cat([anchors, anchors[:10]])  # exact duplicates -> ties in the low-quality rule
    gt_counts = [4, 0, 7]
    boxes = []
    for n in gt_counts:
        b = random_boxes(n, g)
        if n:  # some ground truths are jittered anchors, so strong positives exist too
            pick = torch.randint(0, 60, (n // 2,), generator=g)
            b[: n // 2] = anchors[pick] + torch.randn(n // 2, 4, generator=g)
            b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 1)
        boxes.append(b)
    labels = [torch.randint(0, 5, (n,), generator=g) for n in gt_counts]
    return anchors, boxes, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_python_loop(seed):
    anchors, boxes, labels = make_batch(seed)
    padded, padded_labels, valid = pad_boxes(boxes, labels)
    iou = batched_box_iou(padded, anchors)
    matched_idx, state = Matcher((LOW, HIGH), True)(iou, valid)
    assert matched_idx.shape == state.shape == (3, len(anchors))
    seen_positive = seen_ignore = 0
    for i, b in enumerate(boxes):
        iou_i = box_iou(b, anchors).tolist() if len(b) else []
        ref_idx, ref_state = reference_match(iou_i, len(anchors))
        assert state[i].tolist() == ref_state, f"image {i}"
        pos = [a for a, s in enumerate(ref_state) if s == POSITIVE]
        assert matched_idx[i, pos].tolist() == [ref_idx[a] for a in pos], f"image {i}"
        seen_positive += len(pos)
        seen_ignore += ref_state.count(IGNORE)
    assert all(s == NEGATIVE for s in state[1].tolist())  # the image without ground truth
    assert seen_positive > 0 and seen_ignore > 0  # the data exercises every branch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchvision(seed):
    anchors, boxes, labels = make_batch(seed)
    padded, padded_labels, valid = pad_boxes(boxes, labels)
    matched_idx, state = Matcher((LOW, HIGH), True)(batched_box_iou(padded, anchors), valid)
    tv = TVMatcher(HIGH, LOW, allow_low_quality_matches=True)
    for i, b in enumerate(boxes):
        if len(b) == 0:  # torchvision refuses images without ground truth
            continue
        iou = box_iou(b, anchors)
        # torchvision would also promote IoU-0 anchors of a gt that overlaps nothing; od2 needs IoU > 0
        assert (iou.max(dim=1).values > 0).all()
        tv_matches = tv(iou)
        expected_state = torch.where(tv_matches >= 0, POSITIVE, torch.where(tv_matches == -1, NEGATIVE, IGNORE))
        assert state[i].tolist() == expected_state.tolist()
        pos = tv_matches >= 0
        assert torch.equal(matched_idx[i][pos], tv_matches[pos])


def test_low_quality_match_keeps_its_own_best_gt():
    """Anchor 0 is gt 1's best anchor but overlaps gt 0 more: positive, matched to gt 0."""
    iou = torch.tensor([[[0.30, 0.10, 0.00],
                         [0.20, 0.05, 0.00]]])
    idx, state = Matcher((LOW, HIGH), True)(iou, torch.tensor([[True, True]]))
    assert state.tolist() == [[POSITIVE, NEGATIVE, NEGATIVE]]
    assert idx[0, 0].item() == 0


def test_low_quality_ties_and_zero_overlap():
    iou = torch.tensor([[[0.3, 0.3, 0.1, 0.45],   # gt 0: best anchor 3 (0.45, an ignore without the rule)
                         [0.2, 0.2, 0.2, 0.0],    # gt 1: three-way tie at 0.2
                         [0.0, 0.0, 0.0, 0.0]]])  # gt 2 overlaps nothing: promotes nothing
    idx, state = Matcher((LOW, HIGH), True)(iou, torch.tensor([[True, True, True]]))
    assert state.tolist() == [[POSITIVE, POSITIVE, POSITIVE, POSITIVE]]
    assert idx.tolist() == [[0, 0, 1, 0]]
    _, without = Matcher((LOW, HIGH), False)(iou, torch.tensor([[True, True, True]]))
    assert without.tolist() == [[NEGATIVE, NEGATIVE, NEGATIVE, IGNORE]]


def test_padding_entries_are_ignored():
    iou = torch.tensor([[[0.45, 0.1], [0.9, 0.9]]])  # second gt is padding
    idx, state = Matcher((LOW, HIGH), True)(iou, torch.tensor([[True, False]]))
    assert state.tolist() == [[POSITIVE, NEGATIVE]] and idx[0, 0].item() == 0


def test_pad_boxes_shapes():
    boxes = [torch.zeros(0, 4), torch.ones(2, 4)]
    labels = [torch.zeros(0, dtype=torch.int64), torch.tensor([3, 4])]
    padded, padded_labels, valid = pad_boxes(boxes, labels)
    assert padded.shape == (2, 2, 4) and padded_labels.tolist() == [[0, 0], [3, 4]]
    assert valid.tolist() == [[False, False], [True, True]]
    padded, _, valid = pad_boxes([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)])
    assert padded.shape == (1, 1, 4) and not valid.any()


def test_bad_thresholds():
    with pytest.raises(ValueError):
        Matcher((0.6, 0.5))

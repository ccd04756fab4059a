"""Confusion matrix and F1 curves on hand-made cases whose counts and optimum are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from od2.evaluation.confusion import confusion_matrix, write_confusion_json
from od2.evaluation.matching import IGNORED, UNMATCHED, ImageBoxes, images_with_boxes, match_image
from od2.evaluation.score_threshold import f1_curve, f1_curves

CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def coco(images: dict[int, list[tuple]], detections: list[tuple]) -> tuple[dict, list[dict]]:
    """Ground truth from {image id: [(category id, x, y, w, h, iscrowd)]}, results from
    [(image id, category id, x, y, w, h, score)]."""
    annotations = [{"id": i + 1, "image_id": image_id, "category_id": c, "bbox": [x, y, w, h], "area": w * h,
                    "iscrowd": crowd}
                   for i, (image_id, (c, x, y, w, h, crowd)) in enumerate(
                       (image_id, box) for image_id, boxes in images.items() for box in boxes)]
    gt = {"images": [{"id": i, "width": 200, "height": 200} for i in images], "annotations": annotations,
          "categories": CATEGORIES}
    results = [{"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": s}
               for i, c, x, y, w, h, s in detections]
    return gt, results


def test_confusion_matrix_counts_a_hand_made_case(tmp_path):
    gt, detections = coco(
        {1: [(1, 0, 0, 10, 10, 0), (2, 20, 20, 10, 10, 0), (1, 50, 50, 10, 10, 0), (2, 100, 100, 40, 40, 1)],
         2: [], 3: []},
        [(1, 1, 0, 0, 10, 10, 0.9),       # a on the a: right
         (1, 1, 20, 20, 10, 10, 0.8),     # a on the b: the b seen as an a
         (1, 2, 80, 80, 10, 10, 0.7),     # b on nothing: false detection
         (1, 2, 1, 0, 10, 10, 0.6),       # b on the a that is taken: false detection (one detection per box)
         (1, 1, 50, 50, 10, 10, 0.1),     # below the score threshold: the third a is missed
         (1, 1, 105, 105, 10, 10, 0.9),   # inside the crowd region: counts nowhere
         (2, 2, 0, 0, 10, 10, 0.5)])      # on an image without objects: false detection
    matrix = confusion_matrix(images_with_boxes(gt, detections), num_classes=2, score_thresh=0.3)
    #                         detected a  b  background
    np.testing.assert_array_equal(matrix, [[1, 0, 1],   # true a
                                           [1, 0, 0],   # true b
                                           [0, 3, 0]])  # background
    path = write_confusion_json(matrix, ["a", "b"], 0.3, 0.5, tmp_path / "confusion_matrix.json")
    written = json.loads(path.read_text())
    assert written["classes"] == ["a", "b", "background"] and written["matrix"] == matrix.tolist()
    assert written["rows"] == "ground truth" and written["score_thresh"] == 0.3


def test_confusion_matrix_threshold_is_inclusive():
    gt, detections = coco({1: [(1, 0, 0, 10, 10, 0)]}, [(1, 1, 0, 0, 10, 10, 0.3)])
    images = images_with_boxes(gt, detections)
    assert confusion_matrix(images, 2, score_thresh=0.3)[0, 0] == 1
    assert confusion_matrix(images, 2, score_thresh=0.30001)[0, 2] == 1


def boxes(*xyxy: tuple) -> np.ndarray:
    return np.array(xyxy, dtype=np.float64).reshape(-1, 4)


def test_matching_is_greedy_by_score_not_by_iou():
    image = ImageBoxes(gt_boxes=boxes((0, 0, 10, 10)), gt_labels=np.array([0]), gt_crowd=np.array([False]),
                       dt_boxes=boxes((1, 0, 11, 10), (0, 0, 10, 10)), dt_labels=np.array([0, 0]),
                       dt_scores=np.array([0.9, 0.6]))
    assert match_image(image, 0.5, class_aware=True).tolist() == [0, UNMATCHED]


def test_matching_takes_the_highest_iou_box_and_respects_classes_and_threshold():
    image = ImageBoxes(gt_boxes=boxes((0, 0, 10, 10), (2, 0, 12, 10), (0, 0, 10, 10)),
                       gt_labels=np.array([0, 0, 1]), gt_crowd=np.array([False, False, False]),
                       dt_boxes=boxes((2, 0, 12, 10), (0, 0, 10, 10), (0, 0, 10, 20)),
                       dt_labels=np.array([0, 1, 1]), dt_scores=np.array([0.9, 0.8, 0.7]))
    # The first takes the box it equals (IoU 1 over 8/12), the second the class-1 box; the third overlaps the class-1
    # box at IoU exactly 0.5 but it is taken.
    assert match_image(image, 0.5, class_aware=True).tolist() == [1, 2, UNMATCHED]
    # Without classes, the second detection takes the free box at IoU 1: box 0 (first of two equal IoUs).
    assert match_image(image, 0.5, class_aware=False).tolist() == [1, 0, 2]


def test_detection_on_a_crowd_region_is_ignored_only_for_its_class():
    image = ImageBoxes(gt_boxes=boxes((0, 0, 100, 100)), gt_labels=np.array([0]), gt_crowd=np.array([True]),
                       dt_boxes=boxes((10, 10, 20, 20), (10, 10, 20, 20), (90, 90, 120, 120)),
                       dt_labels=np.array([0, 1, 0]), dt_scores=np.array([0.9, 0.8, 0.7]))
    assert match_image(image, 0.5, class_aware=True).tolist() == [IGNORED, UNMATCHED, UNMATCHED]


def one_class_case() -> tuple[np.ndarray, np.ndarray]:
    """4 objects; detections by descending score: TP TP FP TP FP FP TP."""
    return (np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
            np.array([True, True, False, True, False, False, True]))


def test_f1_curve_of_a_hand_made_case_has_its_known_optimum():
    scores, hits = one_class_case()
    curve = f1_curve(scores[::-1].copy(), hits[::-1].copy(), num_gt=4)  # order of the input does not matter
    # F1 = 2TP / (2TP + FP + FN) at t = 0.9 .. 0.3: 2/5, 4/6, 4/7, 6/8, 6/9, 6/10, 8/11
    np.testing.assert_allclose(curve.thresholds, scores)
    np.testing.assert_allclose(curve.f1, [2 / 5, 4 / 6, 4 / 7, 6 / 8, 6 / 9, 6 / 10, 8 / 11])
    assert curve.best() == pytest.approx({"score_thresh": 0.6, "f1": 0.75, "precision": 0.75, "recall": 0.75})


def test_f1_curve_treats_tied_scores_as_one_threshold():
    curve = f1_curve(np.array([0.5, 0.5, 0.2]), np.array([True, False, True]), num_gt=2)
    np.testing.assert_allclose(curve.thresholds, [0.5, 0.2])
    np.testing.assert_allclose(curve.precision, [1 / 2, 2 / 3])
    np.testing.assert_allclose(curve.recall, [1 / 2, 1])


def test_f1_without_detections_or_objects_has_no_threshold():
    assert f1_curve(np.zeros(0), np.zeros(0, bool), num_gt=3).best()["score_thresh"] is None
    nothing_to_find = f1_curve(np.array([0.9]), np.array([False]), num_gt=0)
    assert nothing_to_find.f1.tolist() == [0.0] and nothing_to_find.best()["score_thresh"] is None


def test_f1_curves_per_class_and_overall_from_coco_files():
    scores, hits = one_class_case()
    objects = [(1, 20 * i, 0, 10, 10, 0) for i in range(4)] + [(2, 0, 100, 10, 10, 0), (2, 150, 150, 40, 40, 1)]
    detections, next_object = [], 0
    for score, hit in zip(scores, hits):
        x, y = (20 * next_object, 0) if hit else (20 * len(detections), 50)  # FPs on empty ground
        next_object += hit
        detections.append((1, 1, x, y, 10, 10, float(score)))
    detections += [(1, 2, 0, 100, 10, 10, 0.95), (1, 2, 155, 155, 10, 10, 0.99)]  # b: found, and on the b crowd
    gt, results = coco({1: objects}, detections)
    per_class, overall = f1_curves(images_with_boxes(gt, results), num_classes=2)
    assert per_class[0].best()["score_thresh"] == pytest.approx(0.6)
    assert per_class[1].best() == pytest.approx({"score_thresh": 0.95, "f1": 1.0, "precision": 1.0, "recall": 1.0})
    # Pooled (the crowd detection ignored): TP TP TP FP TP FP FP TP at 0.95 .. 0.3 over 5 objects; the best is
    # 0.6 with TP 4, FP 1, FN 1: F1 8/10.
    assert overall.num_gt == 5
    assert overall.best() == pytest.approx({"score_thresh": 0.6, "f1": 0.8, "precision": 0.8, "recall": 0.8})


@pytest.mark.parametrize("seed", [0, 3])
def test_f1_curves_count_what_pycocotools_matches_at_iou_half(seed):
    """TP and FP at every threshold equal those of pycocotools' own matching (evalImgs at IoU 0.5, area all), crowd
    regions and empty images included: it is the same rule, with all detections (here under 100 per image)."""
    from test_coco_evaluator import make_detections, make_ground_truth
    from test_per_class import pycocotools_eval

    rng = np.random.default_rng(seed)
    gt = make_ground_truth(rng)
    detections = make_detections(rng, gt)
    for det in detections[::3]:
        det["score"] = round(det["score"], 1)  # ties
    reference = pycocotools_eval(gt, detections)
    category_ids = sorted(c["id"] for c in gt["categories"])
    per_class, _ = f1_curves(images_with_boxes(gt, detections), num_classes=len(category_ids))
    for k, cat_id in enumerate(category_ids):
        scores, hits, num_gt = [], [], 0
        for e in reference.evalImgs:
            if e is None or e["category_id"] != cat_id or e["aRng"] != [0, 1e10]:
                continue
            kept = ~np.asarray(e["dtIgnore"][0], dtype=bool)
            scores += list(np.asarray(e["dtScores"])[kept])
            hits += list(np.asarray(e["dtMatches"][0])[kept] > 0)
            num_gt += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
        order = np.argsort(-np.array(scores), kind="stable")
        scores, hits = np.array(scores)[order], np.array(hits)[order]
        curve = per_class[k]
        assert curve.num_gt == num_gt
        for threshold, precision, recall in zip(curve.thresholds, curve.precision, curve.recall):
            tp = int(hits[scores >= threshold].sum())
            fp = int((~hits[scores >= threshold]).sum())
            assert (precision, recall) == pytest.approx((tp / (tp + fp), tp / num_gt)), (cat_id, threshold)
        assert sorted(set(scores)) == pytest.approx(sorted(curve.thresholds))


def test_f1_picture_draws_the_curve_exactly_at_its_grid_thresholds():
    from od2.evaluation.figures import _THRESHOLD_GRID, _f1_on_grid

    curve = f1_curve(*one_class_case(), num_gt=4)
    drawn = dict(zip(np.round(_THRESHOLD_GRID, 3), _f1_on_grid(curve)))
    # keeping scores >= t: none above 0.9, then the hand-worked values of the case
    assert drawn[0.95] == 0.0 and drawn[0.9] == pytest.approx(2 / 5) and drawn[0.65] == pytest.approx(4 / 7)
    assert drawn[0.6] == pytest.approx(6 / 8) and drawn[0.0] == drawn[0.3] == pytest.approx(8 / 11)

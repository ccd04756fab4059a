"""Per-class APs checked against pycocotools: its summarize() on each category alone, and its precision array."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval
from test_coco_evaluator import make_detections, make_ground_truth

from od2.evaluation.coco_evaluator import evaluate_detections
from od2.evaluation.per_class import PER_CLASS_AP_NAMES, format_per_class_table, per_class_results


def pycocotools_eval(gt: dict, detections: list[dict], category_ids: list[int] | None = None) -> RefCOCOeval:
    """pycocotools' COCOeval after summarize(), restricted to ``category_ids`` when given."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = RefCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        coco_eval = RefCOCOeval(coco_gt, coco_dt, "bbox")
        if category_ids is not None:
            coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def reference_per_class(gt: dict, detections: list[dict]) -> dict[int, list[float | None]]:
    """{category id: [AP..APl]} from pycocotools' summarize() on that category alone (-1 -> None)."""
    expected = {}
    for category in gt["categories"]:
        stats = pycocotools_eval(gt, detections, [category["id"]]).stats[:6]
        expected[category["id"]] = [None if s == -1 else float(s) for s in stats]
    return expected


def detectron2_per_class(gt: dict, detections: list[dict]) -> dict[int, float | None]:
    """{category id: AP} the way detectron2's _derive_coco_results reads pycocotools' precision array."""
    coco_eval = pycocotools_eval(gt, detections)
    precisions = coco_eval.eval["precision"]
    result = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        precision = precisions[:, :, k, 0, -1]
        precision = precision[precision > -1]
        result[cat_id] = float(np.mean(precision)) if precision.size else None
    return result


def od2_per_class(gt: dict, detections: list[dict]) -> dict[str, dict]:
    summary = evaluate_detections(gt, detections)
    return per_class_results(summary.precision, summary.category_ids, gt, detections)


def assert_matches_pycocotools(gt: dict, detections: list[dict]) -> dict[str, dict]:
    ours = od2_per_class(gt, detections)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    assert list(ours) == [names[c] for c in sorted(names)]
    d2 = detectron2_per_class(gt, detections)
    for cat_id, expected in reference_per_class(gt, detections).items():
        got = [ours[names[cat_id]][key] for key in PER_CLASS_AP_NAMES]
        assert [g is None for g in got] == [e is None for e in expected], (names[cat_id], got, expected)
        np.testing.assert_allclose([g for g in got if g is not None], [e for e in expected if e is not None],
                                   rtol=0, atol=1e-9, err_msg=names[cat_id])
        assert (d2[cat_id] is None and got[0] is None) or got[0] == pytest.approx(d2[cat_id], abs=1e-12)
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_aps_match_pycocotools_with_crowd_and_empty_images(seed):
    rng = np.random.default_rng(seed)
    gt = make_ground_truth(rng)
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert assert_matches_pycocotools(gt, make_detections(rng, gt))


def test_tied_scores_and_more_than_100_detections_per_image():
    rng = np.random.default_rng(7)
    gt = make_ground_truth(rng, num_images=12)
    detections = make_detections(rng, gt, false_positives=150)
    for det in detections:
        det["score"] = round(det["score"], 1)
    assert_matches_pycocotools(gt, detections)


def test_class_without_ground_truth_is_none_and_class_without_detections_is_zero():
    rng = np.random.default_rng(5)
    gt = make_ground_truth(rng, num_images=15)
    gt["categories"] += [{"id": 50, "name": "never_annotated"}, {"id": 60, "name": "only_crowd"},
                         {"id": 70, "name": "never_detected"}]
    first_image = gt["images"][1]["id"]
    gt["annotations"] += [
        {"id": 9001, "image_id": first_image, "category_id": 60, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 1},
        {"id": 9002, "image_id": first_image, "category_id": 70, "bbox": [20, 20, 40, 40], "area": 1600, "iscrowd": 0},
    ]
    detections = make_detections(rng, gt)
    detections += [{"image_id": first_image, "category_id": 50, "bbox": [0, 0, 30, 30], "score": 0.9},
                   {"image_id": first_image, "category_id": 60, "bbox": [10, 10, 50, 50], "score": 0.8}]
    ours = assert_matches_pycocotools(gt, detections)
    assert all(ours["never_annotated"][k] is None for k in PER_CLASS_AP_NAMES)
    assert all(ours["only_crowd"][k] is None for k in PER_CLASS_AP_NAMES)
    assert ours["never_annotated"]["num_gt"] == 0 and ours["never_annotated"]["num_dt"] == 1
    assert ours["only_crowd"]["num_gt"] == 0, "crowd regions are not objects to find"
    assert ours["never_detected"]["AP"] == 0.0 and ours["never_detected"]["num_dt"] == 0
    assert ours["never_detected"]["num_gt"] == 1
    assert ours["never_detected"]["APs"] is None and ours["never_detected"]["APm"] == 0.0  # 1600 px: medium


def test_counts_are_non_crowd_boxes_and_all_detections():
    rng = np.random.default_rng(1)
    gt = make_ground_truth(rng, num_images=10)
    detections = make_detections(rng, gt)
    ours = od2_per_class(gt, detections)
    for category in gt["categories"]:
        row = ours[category["name"]]
        assert row["num_gt"] == sum(a["category_id"] == category["id"] and not a["iscrowd"] for a in gt["annotations"])
        assert row["num_dt"] == sum(d["category_id"] == category["id"] for d in detections)


def test_table_shows_percent_and_dashes():
    table = format_per_class_table({"cat": {"AP": 0.5, "AP50": 0.75, "AP75": None, "APs": None, "APm": 0.25,
                                            "APl": 1.0, "num_gt": 3, "num_dt": 7, "F1": 0.5}}, extra=("F1",))
    header, row = table.splitlines()
    assert header.split() == ["class", *PER_CLASS_AP_NAMES, "num_gt", "num_dt", "F1"]
    assert row.split() == ["cat", "50.0", "75.0", "-", "-", "25.0", "100.0", "3", "7", "0.500"]

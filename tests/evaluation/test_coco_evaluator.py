"""COCO evaluation: numbers and table checked against pycocotools, the reference implementation."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval

from od2.evaluation.coco_evaluator import (
    STAT_NAMES,
    CocoEvaluator,
    CocoSummary,
    evaluate_detections,
    evaluate_json_files,
    write_summary_json,
)

CATEGORY_IDS = (1, 3, 7, 90)
# Box sides (pixels) of COCO's small (< 32^2), medium and large (> 96^2) area ranges.
SIDE_RANGES = ((4.0, 30.0), (34.0, 94.0), (100.0, 190.0))


def make_ground_truth(rng: np.random.Generator, num_images: int = 30) -> dict:
    """Random COCO ground truth: boxes of all three sizes, some crowd regions, some empty images."""
    images, annotations = [], []
    for i in range(num_images):
        image_id = 1000 + 3 * i
        height, width = int(rng.integers(300, 700)), int(rng.integers(300, 700))
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.jpg"})
        if i % 10 == 0:
            continue  # images without ground truth
        for _ in range(int(rng.integers(1, 9))):
            side = rng.uniform(*SIDE_RANGES[int(rng.integers(3))])
            w = side * rng.uniform(0.7, 1.4)
            h = side * side / w
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": int(rng.random() < 0.08),
            })
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_detections(rng: np.random.Generator, gt: dict, false_positives: int = 3) -> list[dict]:
    """Jittered copies of ground truth (sometimes with a wrong class) plus random false positives.

    Every fourth image gets no detection at all.
    """
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    detections = []
    for i, image in enumerate(gt["images"]):
        if i % 4 == 1:
            continue
        for ann in by_image.get(image["id"], []):
            if rng.random() < 0.15:
                continue  # missed object
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0.0, 0.12, 4)
            category = ann["category_id"] if rng.random() < 0.9 else int(rng.choice(CATEGORY_IDS))
            detections.append({
                "image_id": image["id"],
                "category_id": category,
                "bbox": [x + jitter[0] * w, y + jitter[1] * h, w * np.exp(jitter[2]), h * np.exp(jitter[3])],
                "score": float(rng.random()),
            })
        for _ in range(int(rng.integers(0, false_positives + 1))):
            w, h = rng.uniform(5, image["width"] / 2), rng.uniform(5, image["height"] / 2)
            detections.append({
                "image_id": image["id"],
                "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": [rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h), w, h],
                "score": float(rng.random()),
            })
    return detections


def run_pycocotools(gt: dict, detections: list[dict]) -> tuple[np.ndarray, str]:
    """Return pycocotools' 12 stats and what its summarize() printed."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = RefCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if detections:
            coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        else:  # pycocotools' loadRes fails on [] (IndexError), so build the empty result set by hand
            coco_dt = RefCOCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        coco_eval = RefCOCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_eval.summarize()
    return coco_eval.stats, printed.getvalue()


@pytest.fixture(scope="module")
def random_case() -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(0)
    gt = make_ground_truth(rng)
    return gt, make_detections(rng, gt)


def test_random_data_covers_the_edge_cases(random_case):
    gt, detections = random_case
    gt_images = {a["image_id"] for a in gt["annotations"]}
    dt_images = {d["image_id"] for d in detections}
    all_images = {img["id"] for img in gt["images"]}
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert all_images - gt_images, "some images without ground truth"
    assert gt_images - dt_images, "some images with ground truth but no detection"
    assert dt_images - gt_images, "some detections on images without ground truth"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_stats_match_pycocotools(seed):
    rng = np.random.default_rng(seed)
    gt = make_ground_truth(rng)
    detections = make_detections(rng, gt)
    expected, _ = run_pycocotools(gt, detections)
    summary = evaluate_detections(gt, detections)
    assert len(summary.stats) == 12
    np.testing.assert_allclose(summary.stats, expected, rtol=0, atol=1e-9)


def test_tied_scores_and_more_than_100_detections_match_pycocotools():
    rng = np.random.default_rng(7)
    gt = make_ground_truth(rng, num_images=12)
    detections = make_detections(rng, gt, false_positives=150)  # past maxDets=100 on some images
    for det in detections:
        det["score"] = round(det["score"], 1)  # many ties: the order among equal scores matters
    expected, _ = run_pycocotools(gt, detections)
    np.testing.assert_allclose(evaluate_detections(gt, detections).stats, expected, rtol=0, atol=1e-9)


def test_no_detections_scores_zero_like_pycocotools(random_case):
    gt, _ = random_case
    expected, _ = run_pycocotools(gt, [])
    summary = evaluate_detections(gt, [])
    np.testing.assert_allclose(summary.stats, expected, rtol=0, atol=1e-9)
    assert summary.as_dict()["AP"] == 0.0


def test_table_is_pycocotools_summary_verbatim(random_case):
    gt, detections = random_case
    _, printed = run_pycocotools(gt, detections)
    assert evaluate_detections(gt, detections).table().splitlines() == printed.splitlines()


def test_table_prints_undefined_metrics_as_pycocotools_does():
    gt = make_ground_truth(np.random.default_rng(3), num_images=10)
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 96**2]  # no large objects: -1
    detections = make_detections(np.random.default_rng(4), gt)
    expected, printed = run_pycocotools(gt, detections)
    summary = evaluate_detections(gt, detections)
    assert summary.as_dict()["APl"] == -1.0 and expected[5] == -1.0
    assert summary.table().splitlines() == printed.splitlines()


def test_evaluator_reused_for_several_rounds_matches_fresh_evaluations(random_case):
    gt, detections = random_case
    gt_before, detections_before = copy.deepcopy(gt), copy.deepcopy(detections)
    evaluator = CocoEvaluator(gt)
    first = evaluator.evaluate(detections)
    second = evaluator.evaluate(detections[: len(detections) // 2])
    third = evaluator.evaluate(detections)
    assert first.stats == third.stats
    np.testing.assert_allclose(second.stats, run_pycocotools(gt, detections[: len(detections) // 2])[0], atol=1e-9)
    assert gt == gt_before and detections == detections_before, "inputs must not be modified"
    assert evaluator.num_images == len(gt["images"])


def test_accepts_numpy_scalars(random_case):
    gt, detections = random_case
    as_numpy = [
        {
            "image_id": np.int64(d["image_id"]),
            "category_id": np.int64(d["category_id"]),
            "bbox": np.asarray(d["bbox"], dtype=np.float64),
            "score": np.float64(d["score"]),
        }
        for d in detections
    ]
    assert evaluate_detections(gt, as_numpy).stats == evaluate_detections(gt, detections).stats


def test_library_prints_nothing(random_case, capsys):
    gt, detections = random_case
    evaluate_detections(gt, detections)
    evaluate_detections(gt, [])
    assert capsys.readouterr().out == ""


def test_summary_fields():
    summary = CocoSummary(stats=tuple(float(i) / 100 for i in range(12)), eval_seconds=0.5)
    assert list(summary.as_dict()) == list(STAT_NAMES)
    assert summary.as_dict()["AR100"] == 0.08
    assert summary.table().splitlines()[0] == (
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"
    )


def test_unknown_image_id_is_a_readable_error(random_case):
    gt, detections = random_case
    with pytest.raises(ValueError, match="424242"):
        evaluate_detections(gt, detections + [{**detections[0], "image_id": 424242}])


def test_detection_missing_a_key_is_a_readable_error(random_case):
    gt, detections = random_case
    with pytest.raises(ValueError, match="#1 "):
        evaluate_detections(gt, [detections[0], {"image_id": detections[0]["image_id"], "bbox": [0, 0, 1, 1]}])


@pytest.fixture()
def json_files(tmp_path, random_case):
    gt, detections = random_case
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(detections))
    return gt_path, dt_path


def test_evaluate_json_files_matches_in_memory(json_files, random_case):
    gt, detections = random_case
    assert evaluate_json_files(*json_files).stats == evaluate_detections(gt, detections).stats


@pytest.mark.parametrize("which", [0, 1])
def test_evaluate_json_files_missing_file(json_files, which):
    paths = list(json_files)
    paths[which] = paths[which].with_name("absent.json")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        evaluate_json_files(*paths)


@pytest.mark.parametrize("which", [0, 1])
def test_evaluate_json_files_malformed_json(json_files, which):
    json_files[which].write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match=json_files[which].name):
        evaluate_json_files(*json_files)


def test_evaluate_json_files_unknown_image_id(json_files, random_case):
    _, detections = random_case
    gt_path, dt_path = json_files
    dt_path.write_text(json.dumps(detections + [{**detections[0], "image_id": 987654}]))
    with pytest.raises(ValueError, match=r"dt\.json.*987654"):
        evaluate_json_files(gt_path, dt_path)


def test_evaluate_json_files_results_not_a_list(json_files):
    gt_path, dt_path = json_files
    dt_path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"dt\.json"):
        evaluate_json_files(gt_path, dt_path)


def test_write_summary_json_is_atomic_and_complete(tmp_path):
    summary = CocoSummary(stats=tuple(float(i) / 10 for i in range(12)), eval_seconds=1.0)
    path = tmp_path / "run" / "metrics.json"
    write_summary_json(summary, path, s_per_img=0.05, num_images=5000)
    write_summary_json(summary, path, s_per_img=0.04, num_images=5000)  # overwrite in place
    written = json.loads(path.read_text())
    assert written == {**dict(zip(STAT_NAMES, summary.stats)), "s_per_img": 0.04, "num_images": 5000}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"], "no temporary file left behind"


# ---------------------------------------------------------------- bad detections: rejected or counted and warned


@pytest.mark.parametrize("field,position,value", [
    ("bbox", 1, float("nan")), ("bbox", 2, float("inf")), ("bbox", 0, float("-inf")),
    ("score", None, float("nan")), ("score", None, float("inf")),
])
def test_non_finite_bbox_or_score_is_rejected_with_its_index(random_case, field, position, value):
    gt, detections = random_case
    detections = copy.deepcopy(detections)
    if position is None:
        detections[3][field] = value
    else:
        detections[3][field][position] = value
    with pytest.raises(ValueError, match=rf"detection #3 .*{field}"):
        evaluate_detections(gt, detections)


@pytest.mark.parametrize("bbox", [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, "x", 3.0, 4.0], 7.0, None])
def test_bbox_that_is_not_four_numbers_is_rejected_with_its_index(random_case, bbox):
    gt, detections = random_case
    detections = copy.deepcopy(detections)
    detections[5]["bbox"] = bbox
    with pytest.raises(ValueError, match=r"detection #5 .*bbox"):
        evaluate_detections(gt, detections)


def with_odd_detections(detections: list[dict]) -> list[dict]:
    """A copy where every 5th detection names a category absent from the ground truth, every 3rd has a negative
    score, and some have a negative width, height or both."""
    odd = copy.deepcopy(detections)
    for det in odd[::5]:
        det["category_id"] = 999
    for det in odd[::3]:
        det["score"] = -det["score"]
    for det in odd[1::4]:
        det["bbox"][2] = -det["bbox"][2]
    for det in odd[2::7]:
        det["bbox"][3] = -det["bbox"][3]
    return odd


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_odd_but_scorable_detections_match_pycocotools(seed):
    rng = np.random.default_rng(seed)
    gt = make_ground_truth(rng)
    detections = with_odd_detections(make_detections(rng, gt))
    expected, _ = run_pycocotools(gt, detections)
    np.testing.assert_allclose(evaluate_detections(gt, detections).stats, expected, rtol=0, atol=1e-9)


def test_odd_detections_are_counted_and_warned(random_case, caplog):
    gt, detections = random_case
    odd = with_odd_detections(detections)
    unknown = sum(d["category_id"] == 999 for d in odd)
    negative_scores = sum(d["score"] < 0 for d in odd)
    negative_sizes = sum(d["bbox"][2] < 0 or d["bbox"][3] < 0 for d in odd)
    with caplog.at_level("WARNING"):
        CocoEvaluator(gt).evaluate(odd, source="dt.json")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all(w.startswith("dt.json: ") for w in warnings), warnings
    unknown_line, score_line, size_line = warnings
    assert f"{unknown} detections" in unknown_line and "[999]" in unknown_line and "category" in unknown_line
    assert f"{negative_scores} detections" in score_line and "negative score" in score_line and "#0" in score_line
    assert f"{negative_sizes} detections" in size_line and "negative width or height" in size_line
    assert "#1" in size_line


def test_valid_detections_warn_nothing(random_case, caplog):
    gt, detections = random_case
    with caplog.at_level("WARNING"):
        evaluate_detections(gt, detections)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_cli_eval_json_rejects_nan_in_one_line_naming_file_and_index(json_files, random_case, capsys):
    from od2.cli import main

    _, detections = random_case
    gt_path, dt_path = json_files
    bad = copy.deepcopy(detections)
    bad[7]["bbox"][0] = float("nan")
    dt_path.write_text(json.dumps(bad))  # json.dumps writes NaN, as numpy-made results files often hold
    assert main(["eval-json", "--gt", str(gt_path), "--dt", str(dt_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dt.json" in err and "#7" in err and "Traceback" not in err, err

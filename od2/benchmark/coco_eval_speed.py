"""COCO bbox evaluation time: od2's evaluator (faster-coco-eval) against pycocotools on the same detections."""

from __future__ import annotations

import contextlib
import io
import random

from od2.evaluation.coco_evaluator import CocoEvaluator

from .timing import Rounds, interleaved_rounds

IMAGE_W, IMAGE_H = 640, 480


def synthetic_coco(num_images: int = 500, num_classes: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO ground truth and 100 detections per image that score between 0 and 1 AP.

    Each image has 1-20 boxes of 8-320 px sides (small, medium and large), some crowd. Detections: most
    ground-truth boxes are found again with a jittered box (right class, score 0.3-1, sometimes the wrong
    class), the rest of the 100 are random boxes with lower scores.
    """
    rng = random.Random(seed)

    def random_box() -> list[float]:
        w, h = rng.uniform(8, 320), rng.uniform(8, 320)
        x, y = rng.uniform(0, IMAGE_W - w), rng.uniform(0, IMAGE_H - h)
        return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]

    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": IMAGE_W, "height": IMAGE_H, "file_name": f"{image_id:06d}.jpg"})
        found = []
        for _ in range(rng.randint(1, 20)):
            box, category = random_box(), rng.randint(1, num_classes)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": int(rng.random() < 0.02)})
            if rng.random() < 0.8:
                jitter = [v + rng.gauss(0, 0.03 * max(box[2], box[3])) for v in box]
                jitter[2:] = [max(1.0, v) for v in jitter[2:]]
                label = rng.randint(1, num_classes) if rng.random() < 0.1 else category
                found.append({"image_id": image_id, "category_id": label, "bbox": jitter,
                              "score": rng.uniform(0.3, 1.0)})
        false_positives = [{"image_id": image_id, "category_id": rng.randint(1, num_classes), "bbox": random_box(),
                            "score": rng.uniform(0.0, 0.6)} for _ in range(100 - len(found))]
        detections += found + false_positives
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def pycocotools_stats(coco_gt, detections: list[dict]) -> list[float]:
    """pycocotools' 12 numbers for ``detections`` against an indexed ``pycocotools.coco.COCO``, quietly."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])  # loadRes adds keys to the dicts it gets
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(s) for s in coco_eval.stats]


def evaluation_seconds(iters: int, num_images: int = 500) -> tuple[dict[str, Rounds], float]:
    """(``{"od2": rounds, "pycocotools": rounds}`` of seconds per evaluation of ``num_images`` images, largest
    difference between the two tools' 12 numbers). Indexing the ground truth is done once beforehand for both,
    as in training.

    Raises RuntimeError when pycocotools is not installed (it comes with od2's ``test`` extra).
    """
    try:
        from pycocotools.coco import COCO
    except ImportError as exc:
        raise RuntimeError("the evaluation benchmark needs pycocotools: pip install -e '.[test]'") from exc
    gt, detections = synthetic_coco(num_images)
    with contextlib.redirect_stdout(io.StringIO()):
        pycocotools_gt = COCO()
        pycocotools_gt.dataset = gt
        pycocotools_gt.createIndex()
    evaluator = CocoEvaluator(gt)
    results: dict[str, list[float]] = {}

    def run_od2() -> None:
        results["od2"] = list(evaluator.evaluate(detections).stats)

    def run_pycocotools() -> None:
        results["pycocotools"] = pycocotools_stats(pycocotools_gt, detections)

    seconds = interleaved_rounds({"od2": run_od2, "pycocotools": run_pycocotools}, iters)
    difference = max(abs(a - b) for a, b in zip(results["od2"], results["pycocotools"]))
    return seconds, difference

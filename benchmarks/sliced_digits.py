"""AP and seconds per image with and without sliced inference (TEST.SLICE) on large images built from digits
scenes (issue 19): each canvas is a GRID x GRID mosaic of digits_val scenes in 256 x 256 cells, so that at the
demo's test size (short side 192) the whole canvas shrinks GRID * 256 / 192 times and the digits become tiny.

    python benchmarks/sliced_digits.py --weights RUN/model_final.pth [--grid 4] [--images 20] [--out output/sliced]
    python benchmarks/sliced_digits.py --weights RUN/model_final.pth --sahi --sahi-path SAHI_DIR

Every variant runs through od2's one inference path (``evaluate_model`` -> ``InferencePipeline``), back to back in
one process, and prints AP, AP50, APs and the model's seconds per image: the whole canvas at the test size; tiles
(``--tile``, ``--overlap``) with and without the full-image pass.

``--sahi`` also runs sahi's ``get_sliced_prediction`` (the od2 model wrapped as a sahi ``DetectionModel``, each
slice resized to the test size as od2 resizes a tile) against od2's ``SlicedInference`` through ``od2.Detector``,
with the same tiles and overlap, canvas by canvas in turn, and scores both with od2's COCO evaluator. sahi merges
by class-wise NMS at MODEL.RETINANET.NMS_THRESH_TEST (``--sahi-merge nms``: what sahi itself switches to below a 0.1
score threshold, and od2 evaluates at 0.05) or by greedy IoS merging at TEST.SLICE.MATCH_THRESH (``greedy``, sahi's
GREEDYNMM forced: the union of every overlapping box, which inflates boxes at a low score threshold).
sahi is not an od2 dependency: install it apart (``pip install --target SAHI_DIR sahi``) and name that folder with
``--sahi-path``; it is appended to ``sys.path``, so the packages both share (numpy, pillow, torch) are the
environment's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from od2 import Detector
from od2.config import load_config
from od2.data.catalog import default_root, get_dataset, register_coco_instances
from od2.data.records import DatasetInfo
from od2.detector import load_trained_model
from od2.evaluation.coco_evaluator import CocoEvaluator
from od2.evaluation.evaluate import evaluate_model

PACKAGED_CONFIG = "configs/digits/retinanet_lite0.yaml"
CELL = 256
DATASET = "digits_large"


def build_canvases(info: DatasetInfo, out: Path, grid: int, count: int) -> Path:
    """``count`` canvases of grid x grid scenes of ``info`` (each at the top left of its 256 x 256 cell, cut to the
    cell, black around it), saved as PNG in ``out`` with a COCO json whose boxes are the scenes' boxes, cut to the
    cell and shifted by it; scenes are taken in order, wrapping around. Returns the json path."""
    images, annotations = [], []
    for canvas_id in range(1, count + 1):
        canvas = np.zeros((grid * CELL, grid * CELL, 3), np.uint8)
        for cell in range(grid * grid):
            record = info.records[((canvas_id - 1) * grid * grid + cell) % len(info.records)]
            scene = np.asarray(Image.open(record["file_name"]).convert("RGB"))[:CELL, :CELL]
            y0, x0 = (cell // grid) * CELL, (cell % grid) * CELL
            canvas[y0:y0 + scene.shape[0], x0:x0 + scene.shape[1]] = scene
            for box, label in zip(record["boxes"], record["labels"]):
                x1, y1, x2, y2 = np.minimum(box, [scene.shape[1], scene.shape[0]] * 2).tolist()
                if x2 <= x1 or y2 <= y1:
                    continue  # wholly outside the cell
                annotations.append({"id": len(annotations) + 1, "image_id": canvas_id,
                                    "category_id": int(info.category_ids[label]),
                                    "bbox": [x0 + x1, y0 + y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
        Image.fromarray(canvas).save(out / f"{canvas_id:04d}.png")
        images.append({"id": canvas_id, "file_name": f"{canvas_id:04d}.png", "height": grid * CELL,
                       "width": grid * CELL})
    categories = [{"id": int(i), "name": n} for i, n in zip(info.category_ids, info.class_names)]
    path = out / "large.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def slice_overrides(tile: int, overlap: float, full_image: bool, match_thresh: float,
                    merge: str = "pieces") -> list[str]:
    """The TEST.SLICE keys of one sliced variant."""
    return ["TEST.SLICE.ENABLED=True", f"TEST.SLICE.SIZE=[{tile},{tile}]", f"TEST.SLICE.OVERLAP={overlap}",
            f"TEST.SLICE.FULL_IMAGE={full_image}", f"TEST.SLICE.MATCH_THRESH={match_thresh}",
            f"TEST.SLICE.MERGE={merge}"]


def scores(summary: dict[str, float]) -> str:
    return f"AP {100 * summary['AP']:.1f}, AP50 {100 * summary['AP50']:.1f}, APs {100 * summary['APs']:.1f}"


def run_variants(config: str, model: torch.nn.Module, out: Path, args: argparse.Namespace) -> None:
    """AP and model seconds per image of the whole canvas and of the sliced variants, through od2 eval's path."""
    tiles = f"tiles {args.tile}x{args.tile}, overlap {args.overlap}, merge {args.merge}"
    variants = {"whole canvas at the test size": [],
                f"{tiles}, + full image": slice_overrides(args.tile, args.overlap, True, args.match_thresh,
                                                          args.merge),
                f"{tiles}, tiles only": slice_overrides(args.tile, args.overlap, False, args.match_thresh,
                                                        args.merge)}
    for name, overrides in variants.items():
        cfg = load_config(config, [f"DATASETS.TEST=[{DATASET}]", "DATALOADER.NUM_WORKERS=0", *overrides])
        start = time.perf_counter()
        summary = evaluate_model(cfg, model, torch.device("cpu"), DATASET, out / "eval", quiet=True)
        print(f"{name}: {scores(summary)}, {summary['s_per_img']:.3f} s/img model time "
              f"({time.perf_counter() - start:.0f} s wall)", flush=True)


def sahi_detection_model(detector: Detector) -> Any:
    """A sahi ``DetectionModel`` that runs ``detector`` (no slicing: the plain test resize) on each slice."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    class Od2DetectionModel(DetectionModel):
        def set_model(self, model: Detector, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {str(i): name for i, name in enumerate(model.class_names)}

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self.model(image)

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=([0, 0],),
                                                                     full_shape_list=None) -> None:
            result = self._original_predictions
            # sahi passes one flat [x, y] / [h, w] for a whole image, a list of them for slices
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            shift = shift_amount_list if isinstance(shift, (int, float)) else shift
            full_shape = None if full_shape_list is None else full_shape_list[0]
            full_shape = full_shape_list if isinstance(full_shape, (int, float)) else full_shape
            keep = result.scores > self.confidence_threshold
            self._object_prediction_list_per_image = [[
                ObjectPrediction(bbox=box, category_id=label, category_name=self.category_mapping[str(label)],
                                 score=score, shift_amount=list(shift), full_shape=full_shape)
                for box, score, label in zip(result.boxes[keep].tolist(), result.scores[keep].tolist(),
                                             result.labels[keep].tolist())]]

    # the model's own score threshold (MODEL.RETINANET.SCORE_THRESH_TEST) already applies: keep all it returns
    return Od2DetectionModel(model=detector, confidence_threshold=0.0, device=str(detector.device))


def sahi_coco(prediction: Any, image_id: int, category_ids: list[int], max_detections: int) -> list[dict]:
    """COCO results of a sahi ``PredictionResult``, the ``max_detections`` best as od2 keeps."""
    best = sorted(prediction.object_prediction_list, key=lambda p: -p.score.value)[:max_detections]
    return [{"image_id": image_id, "category_id": category_ids[p.category.id],
             "bbox": [round(v, 3) for v in p.bbox.to_xywh()], "score": round(float(p.score.value), 5)}
            for p in best]


def run_sahi(config: str, model: torch.nn.Module, info: DatasetInfo, out: Path, args: argparse.Namespace) -> None:
    """od2's SlicedInference and sahi's get_sliced_prediction on the same canvases, in turn, with and without the
    full-image pass: AP and wall seconds per image (decoded image in, merged detections out)."""
    if args.sahi_path:
        sys.path.append(args.sahi_path)
    import sahi
    from sahi.predict import get_sliced_prediction

    plain = load_config(config, [f"DATASETS.TEST=[{DATASET}]"])
    sahi_model = sahi_detection_model(Detector(model, plain, info.class_names, info.category_ids, "cpu"))
    max_detections = plain.TEST.DETECTIONS_PER_IMAGE
    canvases = [(record["image_id"], np.asarray(Image.open(record["file_name"]).convert("RGB")))
                for record in info.records]
    evaluator = CocoEvaluator(info.coco_gt)
    merge = {"nms": ("NMS", "IOU", plain.MODEL.RETINANET.NMS_THRESH_TEST),
             "greedy": ("GREEDYNMM", "IOS", args.match_thresh)}[args.sahi_merge]
    print(f"sahi {sahi.__version__} ({merge[0]} by {merge[1]} at {merge[2]}) against od2 SlicedInference, tiles "
          f"{args.tile}x{args.tile}, overlap {args.overlap}", flush=True)
    for full_image in (True, False):
        od2_sliced = Detector(model, load_config(config, slice_overrides(args.tile, args.overlap, full_image,
                                                                         args.match_thresh, args.merge)),
                              info.class_names, info.category_ids, "cpu")

        def sahi_predict(image: np.ndarray, full_image: bool = full_image) -> Any:
            # force_postprocess_type: else sahi switches to NMS by IoU below its LOW_MODEL_CONFIDENCE (0.1)
            return get_sliced_prediction(image, sahi_model, slice_height=args.tile, slice_width=args.tile,
                                         overlap_height_ratio=args.overlap, overlap_width_ratio=args.overlap,
                                         perform_standard_pred=full_image, postprocess_type=merge[0],
                                         postprocess_match_metric=merge[1], postprocess_match_threshold=merge[2],
                                         force_postprocess_type=True, verbose=0)

        od2_sliced(canvases[0][1])  # warm-up
        sahi_predict(canvases[0][1])
        results: dict[str, list[dict]] = {"od2": [], "sahi": []}
        seconds = {"od2": 0.0, "sahi": 0.0}
        for image_id, image in tqdm(canvases, desc=f"od2 and sahi, full image {full_image}", leave=False):
            start = time.perf_counter()
            detections = od2_sliced(image)
            seconds["od2"] += time.perf_counter() - start
            results["od2"] += detections.to_coco(image_id)
            start = time.perf_counter()
            prediction = sahi_predict(image)
            seconds["sahi"] += time.perf_counter() - start
            results["sahi"] += sahi_coco(prediction, image_id, info.category_ids, max_detections)
        for name in ("od2", "sahi"):
            summary = evaluator.evaluate(results[name]).as_dict()
            (out / f"{name}_full{int(full_image)}_detections.json").write_text(json.dumps(results[name]))
            print(f"{name}, {'+ full image' if full_image else 'tiles only'}: {scores(summary)}, "
                  f"{seconds[name] / len(canvases):.3f} s/img wall", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the trained digits model's checkpoint")
    parser.add_argument("--config", help="its config (default: config.yaml beside the weights, else "
                                         f"{PACKAGED_CONFIG})")
    parser.add_argument("--grid", type=int, default=4, help="scenes per canvas side (canvas side = grid * 256)")
    parser.add_argument("--images", type=int, default=20, help="number of canvases")
    parser.add_argument("--tile", type=int, default=256, help="tile side in canvas pixels (TEST.SLICE.SIZE)")
    parser.add_argument("--overlap", type=float, default=0.2, help="TEST.SLICE.OVERLAP")
    parser.add_argument("--match-thresh", type=float, default=0.5, help="TEST.SLICE.MATCH_THRESH (IoS)")
    parser.add_argument("--merge", choices=["pieces", "nms"], default="pieces", help="TEST.SLICE.MERGE")
    parser.add_argument("--datasets-root", help="where digits/ is (generated if absent); default od2's datasets root")
    parser.add_argument("--out", default="output/sliced_digits")
    parser.add_argument("--sahi", action="store_true", help="also compare with sahi's get_sliced_prediction")
    parser.add_argument("--sahi-path", help="the folder sahi was installed in with pip --target")
    parser.add_argument("--sahi-merge", choices=["nms", "greedy"], default="nms",
                        help="sahi's merge: NMS by IoU (its choice at low score thresholds) or GREEDYNMM by IoS")
    parser.add_argument("--no-variants", action="store_true", help="skip the od2 eval variants (with --sahi)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    beside = Path(args.weights).parent / "config.yaml"
    config = args.config or (str(beside) if beside.is_file() else PACKAGED_CONFIG)
    source = get_dataset("digits_val", args.datasets_root or default_root())
    register_coco_instances(DATASET, build_canvases(source, out, args.grid, args.images), out)
    cfg = load_config(config)
    model, _, _ = load_trained_model(cfg, args.weights)
    print(f"{args.images} canvases of {args.grid * CELL}x{args.grid * CELL} ({args.grid}x{args.grid} digits scenes), "
          f"test size {cfg.INPUT.MIN_SIZE_TEST}/{cfg.INPUT.MAX_SIZE_TEST}, {torch.get_num_threads()} threads",
          flush=True)
    if not args.no_variants:
        run_variants(config, model, out, args)
    if args.sahi:
        run_sahi(config, model, get_dataset(DATASET), out, args)


if __name__ == "__main__":
    main()

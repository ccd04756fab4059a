"""Evaluate a model on a catalog dataset: inference, COCO metrics, per-class results, summary files, pictures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from od2.config import CfgNode, ConfigError
from od2.data.records import DatasetInfo
from od2.data.setup import build_test_loader_from_cfg, load_datasets
from od2.utils import comm as dist

from .coco_evaluator import CocoEvaluator, write_summary_json
from .diagnostics import write_diagnostics
from .inference import run_inference
from .pipeline import InferencePipeline

logger = logging.getLogger(__name__)

VIS_SCORE_THRESH = 0.3  # the detections training's evaluations draw (od2 eval --vis-thresh's default)


def evaluate_model(cfg: CfgNode, model: torch.nn.Module, device: torch.device, dataset_name: str,
                   out_dir: str | Path, quiet: bool = False, info: DatasetInfo | None = None) -> dict | None:
    """COCO evaluation of ``model`` on ``dataset_name``, after converting ``model`` in place for inference as the
    config asks (:func:`od2.modeling.build.convert_for_inference`; exact for training, which may go on after it),
    through test-time augmentation or sliced inference when TEST.AUG or TEST.SLICE enable them
    (:func:`od2.evaluation.predictor.build_test_predictor`).

    Images that fail to decode are skipped (DATALOADER.BAD_IMAGES=skip) and left out of the ground truth too, so
    AP covers the images scored; the summary's ``num_images`` counts those, ``skipped_images`` lists the others
    (image_id, file_name, reason), and the printed report names them.

    With TEST.VAL_LOSS the summary also holds the validation losses from the same forward (``loss_cls``,
    ``loss_box_reg``, ``total_loss``: :func:`run_inference`'s ``losses``).

    Writes ``out_dir/coco_summary.json`` (AP..ARl fractions, s_per_img, num_images, skipped_images, the seconds
    of the evaluator and of the diagnostics), ``out_dir/detections.json`` (COCO results) and the per-class results,
    thresholds, confusion matrix and pictures (:func:`od2.evaluation.diagnostics.write_diagnostics`, the matrix at
    TEST.CONFUSION_SCORE_THRESH) on rank 0, prints the 12-line table, the per-class table and the best score
    threshold unless ``quiet``, and returns the summary dict on rank 0 (None on the other ranks): the
    coco_summary.json entries plus ``per_class``, ``figures`` ({name: PNG path}), ``best_score_thresh`` and
    ``best_f1``. ``info``: ``dataset_name`` already loaded
    (checked images included), so that periodic evaluations do not load and check it again.
    """
    confusion_score_thresh = _confusion_score_thresh(cfg)
    if info is None:
        info = load_datasets([dataset_name], cfg, key="DATASETS.TEST")
    num_classes = getattr(model, "num_classes", len(info.category_ids))
    if num_classes != len(info.category_ids):
        raise ValueError(f"the model predicts {num_classes} classes but {dataset_name} has "
                         f"{len(info.category_ids)} ({info.class_names}); evaluate on a dataset with the "
                         f"training classes")
    pipeline = InferencePipeline(cfg, model, info.class_names, info.category_ids, device)
    loader = build_test_loader_from_cfg(cfg, info.records, pipeline.resize)
    # the validation loss needs the plain model's forward: left out under test-time augmentation or slicing
    result = run_inference(pipeline, loader, progress=not quiet,
                           losses=cfg.TEST.VAL_LOSS and pipeline.computes_losses)
    if not dist.is_main_process():
        return None
    coco_gt = _without_images(info.coco_gt, {s["image_id"] for s in result.skipped})
    summary = CocoEvaluator(coco_gt).evaluate(result.detections)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "detections.json").write_text(json.dumps(result.detections))
    start = time.perf_counter()
    diagnostics = write_diagnostics(coco_gt, result.detections, summary, out_dir, confusion_score_thresh)
    extra = {"s_per_img": round(result.seconds_per_image, 5), "num_images": result.num_images,
             "eval_seconds": round(summary.eval_seconds, 3),
             "diagnostics_seconds": round(time.perf_counter() - start, 3), "dataset": dataset_name,
             "skipped_images": result.skipped, **result.losses}
    write_summary_json(summary, out_dir / "coco_summary.json", **extra)
    if not quiet:
        print(f"COCO bbox evaluation of {dataset_name} ({result.num_images} images scored, {len(result.skipped)} "
              f"skipped, {len(result.detections)} detections):")
        for skip in result.skipped:
            print(f"  skipped image id {skip['image_id']} {skip['file_name']}: {skip['reason']}")
        print(summary.table())
        print(f"model time: {result.seconds_per_image:.4f} s/img on {device} | evaluator time: "
              f"{summary.eval_seconds:.2f} s")
        print(diagnostics.report())
        print(f"per-class results, thresholds, confusion matrix and pictures in {out_dir}")
        if result.losses:
            print("validation loss: " + " ".join(f"{k} {v:.4f}" for k, v in result.losses.items()))
    return {**summary.as_dict(), **extra, **diagnostics.summary_entries()}


def _confusion_score_thresh(cfg: CfgNode) -> float:
    """TEST.CONFUSION_SCORE_THRESH, checked before any inference (ConfigError outside [0, 1])."""
    value = float(cfg.TEST.CONFUSION_SCORE_THRESH)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"TEST.CONFUSION_SCORE_THRESH must be a score in [0, 1], got {value}")
    return value


def require_checkpoint_classes(checkpoint: dict[str, Any], weights: str | Path, info: DatasetInfo) -> None:
    """A ConfigError naming both lists unless the checkpoint's ``class_names`` (od2 training checkpoints hold them;
    a bare state_dict does not, and passes) equal the test set's, in order: label k is a position in the list, so
    a model trained with another class order would be scored as predicting other classes.

    Weights that name their own category ids (torchvision's COCO weights) must name the test set's: detections are
    written with the test set's ids, so any other mapping would score every detection as another category."""
    weight_ids = checkpoint.get("category_ids")
    if weight_ids and list(weight_ids) != list(info.category_ids):
        raise ConfigError(f"{weights}: its labels are category ids {list(weight_ids)}, but {info.name!r} "
                          f"(DATASETS.TEST) has {list(info.category_ids)}; evaluate on a set with the weights' "
                          "categories")
    trained = checkpoint.get("class_names")
    if trained is None or list(trained) == list(info.class_names):
        return
    how = "the same classes in another order" if sorted(trained) == sorted(info.class_names) else "other classes"
    raise ConfigError(f"{weights} was trained on classes {list(trained)} but the test set {info.name!r} "
                      f"(DATASETS.TEST) has {list(info.class_names)}: {how}, so its scores would be garbage. "
                      "Evaluate on a dataset with the training classes in the training order (for VOC, "
                      "class_names.txt at the dataset root fixes the order)")


def _without_images(coco_gt: dict, image_ids: set[int]) -> dict:
    """``coco_gt`` less the images ``image_ids`` and their annotations (a shallow copy; ``coco_gt`` if none)."""
    if not image_ids:
        return coco_gt
    return {**coco_gt, "images": [im for im in coco_gt["images"] if im["id"] not in image_ids],
            "annotations": [a for a in coco_gt["annotations"] if a["image_id"] not in image_ids]}


def build_evaluator(cfg: CfgNode) -> Callable[[torch.nn.Module], dict | None]:
    """The evaluation a training run makes every TEST.EVAL_PERIOD iterations: ``evaluate(model) -> summary``.

    It runs :func:`evaluate_model` quietly on DATASETS.TEST[0], on the device the model's weights are on, writing
    ``OUTPUT_DIR/eval``, and with TEST.VIS_IMAGES draws the detections (score >= 0.3) on that many test images
    into ``eval/predictions.png``, named in the summary's ``figures`` (TensorBoard and the trackers show it); the
    trainer takes it as ``Trainer(cfg, evaluator=build_evaluator(cfg))`` (what
    ``od2 train`` does), since od2.engine does not import od2.evaluation.

    Raises:
        ValueError: the test set has no images (its classes are the config's one list: od2.data.class_list).
        ConfigError: TEST.CONFUSION_SCORE_THRESH is not in [0, 1].
    """
    if not cfg.DATASETS.TEST:
        raise ConfigError("build_evaluator: DATASETS.TEST is empty; name the dataset to evaluate on")
    dataset_name, out_dir = cfg.DATASETS.TEST[0], Path(cfg.OUTPUT_DIR) / "eval"
    _confusion_score_thresh(cfg)
    # Checked now, not at the first evaluation hours into the run (the catalog caches what is loaded here).
    test_data = load_datasets([dataset_name], cfg, key="DATASETS.TEST")

    def evaluate(model: torch.nn.Module) -> dict | None:
        summary = evaluate_model(cfg, model, next(model.parameters()).device, dataset_name, out_dir, quiet=True,
                                 info=test_data)
        if summary is not None and cfg.TEST.VIS_IMAGES > 0:
            from .visualize import draw_dataset_predictions

            path = draw_dataset_predictions(test_data, out_dir / "detections.json", out_dir / "predictions.png",
                                            num_images=cfg.TEST.VIS_IMAGES, score_thresh=VIS_SCORE_THRESH)
            summary = {**summary, "figures": {**summary.get("figures", {}), "predictions": str(path)}}
        return summary

    return evaluate

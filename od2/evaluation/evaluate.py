"""Evaluate a model on a catalog dataset: inference, COCO metrics, summary files, a picture."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from od2.config import CfgNode, ConfigError
from od2.data.records import DatasetInfo
from od2.data.setup import build_test_loader_from_cfg, load_datasets, require_same_classes
from od2.modeling.build import convert_for_inference
from od2.utils import comm as dist

from .coco_evaluator import CocoEvaluator, write_summary_json
from .inference import run_inference
from .predictor import build_test_predictor

logger = logging.getLogger(__name__)


def evaluate_model(cfg: CfgNode, model: torch.nn.Module, device: torch.device, dataset_name: str,
                   out_dir: str | Path, quiet: bool = False, info: DatasetInfo | None = None) -> dict | None:
    """COCO evaluation of ``model`` on ``dataset_name``, after converting ``model`` in place for inference as the
    config asks (:func:`od2.modeling.build.convert_for_inference`; exact for training, which may go on after it),
    through test-time augmentation or sliced inference when TEST.AUG or TEST.SLICE enable them
    (:func:`od2.evaluation.predictor.build_test_predictor`).

    Images that fail to decode are skipped (DATALOADER.BAD_IMAGES=skip) and left out of the ground truth too, so
    AP covers the images scored; the summary's ``num_images`` counts those, ``skipped_images`` lists the others
    (image_id, file_name, reason), and the printed report names them.

    Writes ``out_dir/coco_summary.json`` (AP..ARl fractions, s_per_img, num_images, skipped_images) and
    ``out_dir/detections.json`` (COCO results) on rank 0, prints the 12-line table unless ``quiet``, and
    returns the summary dict on rank 0 (None on the other ranks). ``info``: ``dataset_name`` already loaded
    (checked images included), so that periodic evaluations do not load and check it again.
    """
    if info is None:
        info = load_datasets([dataset_name], cfg, key="DATASETS.TEST")
    num_classes = getattr(model, "num_classes", len(info.category_ids))
    if num_classes != len(info.category_ids):
        raise ValueError(f"the model predicts {num_classes} classes but {dataset_name} has "
                         f"{len(info.category_ids)} ({info.class_names}); evaluate on a dataset with the "
                         f"training classes")
    predictor, resize = build_test_predictor(cfg, convert_for_inference(model, cfg))
    loader = build_test_loader_from_cfg(cfg, info.records, resize)
    result = run_inference(predictor, loader, device, list(info.category_ids), progress=not quiet)
    if not dist.is_main_process():
        return None
    summary = CocoEvaluator(_without_images(info.coco_gt, {s["image_id"] for s in result.skipped})).evaluate(
        result.detections)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "detections.json").write_text(json.dumps(result.detections))
    extra = {"s_per_img": round(result.seconds_per_image, 5), "num_images": result.num_images,
             "eval_seconds": round(summary.eval_seconds, 3), "dataset": dataset_name,
             "skipped_images": result.skipped}
    write_summary_json(summary, out_dir / "coco_summary.json", **extra)
    if not quiet:
        print(f"COCO bbox evaluation of {dataset_name} ({result.num_images} images scored, {len(result.skipped)} "
              f"skipped, {len(result.detections)} detections):")
        for skip in result.skipped:
            print(f"  skipped image id {skip['image_id']} {skip['file_name']}: {skip['reason']}")
        print(summary.table())
        print(f"model time: {result.seconds_per_image:.4f} s/img on {device} | evaluator time: "
              f"{summary.eval_seconds:.2f} s")
    return {**summary.as_dict(), **extra}


def require_checkpoint_classes(checkpoint: dict[str, Any], weights: str | Path, info: DatasetInfo) -> None:
    """A ConfigError naming both lists unless the checkpoint's ``class_names`` (od2 training checkpoints hold them;
    a bare state_dict does not, and passes) equal the test set's, in order: label k is a position in the list, so
    a model trained with another class order would be scored as predicting other classes."""
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
    ``OUTPUT_DIR/eval``; the trainer takes it as ``Trainer(cfg, evaluator=build_evaluator(cfg))`` (what
    ``od2 train`` does), since od2.engine does not import od2.evaluation.

    Raises:
        ValueError: the test set has no images, or classes other than DATASETS.TRAIN's (in another order too).
    """
    if not cfg.DATASETS.TEST:
        raise ConfigError("build_evaluator: DATASETS.TEST is empty; name the dataset to evaluate on")
    dataset_name, out_dir = cfg.DATASETS.TEST[0], Path(cfg.OUTPUT_DIR) / "eval"
    # Checked now, not at the first evaluation hours into the run (the catalog caches what is loaded here).
    test_data = load_datasets([dataset_name], cfg, key="DATASETS.TEST")
    if cfg.DATASETS.TRAIN:
        require_same_classes(load_datasets(cfg.DATASETS.TRAIN, cfg), test_data)

    def evaluate(model: torch.nn.Module) -> dict | None:
        return evaluate_model(cfg, model, next(model.parameters()).device, dataset_name, out_dir, quiet=True,
                              info=test_data)

    return evaluate

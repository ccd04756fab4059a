"""``od2 predict``: detections on arbitrary image files or folders, drawn to PNG and written as COCO results.

Images are decoded and resized in DataLoader workers (the test resize: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST),
batched and padded as in evaluation, and the detections are mapped back to original-image pixels. A file that
cannot be decoded, or whose header claims more pixels than INPUT.MAX_IMAGE_PIXELS, is skipped, counted and named
with its reason in the log; it never stops the run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from od2.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, read_image
from od2.data.loader import collate_batch
from od2.data.transforms import image_as_tensor, resize_image, resized_hw
from od2.utils.visualize import draw_detections

from .inference import to_coco_results

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "PredictSummary", "checkpoint_category_ids", "checkpoint_class_names", "collect_images",
           "output_names", "predict_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def checkpoint_class_names(checkpoint: dict[str, Any], num_anchors: int, num_classes: int = 0) -> list[str]:
    """The class names a checkpoint was trained with: od2 training checkpoints store them; for a bare state_dict
    the count comes from ``num_classes`` (MODEL.RETINANET.NUM_CLASSES) or the class predictor's rows /
    ``num_anchors``, and the names are the label numbers."""
    if checkpoint.get("class_names"):
        return list(checkpoint["class_names"])
    if not num_classes:
        state = checkpoint["model"]
        weight = state.get("head.cls_score.weight", state.get("head.cls_score.pointwise.weight"))
        if weight is None:
            raise ValueError("the weights hold neither class names nor a RetinaNet class predictor "
                             "(head.cls_score); set MODEL.RETINANET.NUM_CLASSES")
        num_classes = weight.shape[0] // num_anchors
    return [str(label) for label in range(num_classes)]


def checkpoint_category_ids(checkpoint: dict[str, Any], num_classes: int) -> list[int]:
    """The category id of each of the ``num_classes`` labels: the checkpoint's ``category_ids`` when it has one per
    label (torchvision's COCO weights: COCO's ids, 1..90 with gaps), else ``label + 1``."""
    ids = checkpoint.get("category_ids")
    if ids and len(ids) == num_classes:
        return [int(i) for i in ids]
    return list(range(1, num_classes + 1))


def collect_images(inputs: Sequence[str | os.PathLike],
                   exclude: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(image file, the input it came from)`` for every input: a file as given, a folder's image files
    (``IMAGE_EXTENSIONS``, case-insensitive, searched recursively, sorted). Duplicates are kept once.

    ``exclude``: a folder whose files are left out of the folder searches, the output folder of ``od2 predict``,
    so that an output folder inside an input folder does not feed its drawings to the next run.

    Raises ``FileNotFoundError`` naming an input that does not exist, ``ValueError`` when no image is found and
    when ``exclude`` is an input folder itself (its drawings would overwrite or join its images).
    """
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None
    found: dict[Path, Path] = {}
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            found.setdefault(path, path)
        elif path.is_dir():
            if excluded is not None and Path(os.path.realpath(path)) == excluded:
                raise ValueError(f"the output folder {exclude} is the input folder {raw}: the drawings would "
                                 "overwrite or join its images; choose another output folder")
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
                if excluded is None or not Path(os.path.realpath(file)).is_relative_to(excluded):
                    found.setdefault(file, path)
        else:
            raise FileNotFoundError(f"predict input not found: {raw}")
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {[str(p) for p in inputs]}")
    return list(found.items())


def output_names(images: Sequence[tuple[Path, Path]]) -> list[str]:
    """A unique relative PNG name per image: its path under the folder it was found in (a file given directly:
    its name), with ``.png``; clashes get ``_1``, ``_2``, ... before the suffix."""
    names, used = [], set()
    for file, root in images:
        rel = file.relative_to(root) if root != file else Path(file.name)
        stem, candidate, n = rel.with_suffix(""), rel.with_suffix(".png"), 0
        while candidate.as_posix() in used:
            n += 1
            candidate = Path(f"{stem}_{n}.png")
        used.add(candidate.as_posix())
        names.append(candidate.as_posix())
    return names


class ImageFiles(Dataset):
    """Image files decoded and resized for the test size; an undecodable file, or one whose header claims more than
    ``max_pixels`` pixels (None or <= 0: no limit), gives ``{"error": reason}``.

    Items: ``image`` uint8 [3, h, w], ``image_size`` (h, w), ``orig_size`` (H, W), ``image_id`` (index + 1),
    ``original`` uint8 [H, W, 3] (for drawing), and empty ``boxes`` / ``labels`` so ``collate_batch`` applies.
    """

    def __init__(self, files: Sequence[Path], min_size: int, max_size: int, keep_original: bool,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.files, self.min_size, self.max_size, self.keep_original = list(files), min_size, max_size, keep_original
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            original = read_image(self.files[index], max_pixels=self.max_pixels)
        except (ImageReadError, OSError) as exc:
            return {"index": index, "error": str(exc)}
        height, width = original.shape[:2]
        h, w = resized_hw(height, width, self.min_size, self.max_size)
        resized = resize_image(original, h, w)
        return {
            "index": index,
            "image": image_as_tensor(resized).permute(2, 0, 1),
            "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": index + 1, "orig_size": (height, width), "image_size": (h, w),
            "original": original if self.keep_original else None,
        }


def _collate(items: Sequence[dict[str, Any]], size_divisibility: int) -> dict[str, Any]:
    """Good items collated as a test batch (plus ``index`` and ``original`` lists); failed ones under ``errors``."""
    good = [it for it in items if "error" not in it]
    batch = collate_batch(good, size_divisibility) if good else {}
    batch["index"] = [it["index"] for it in good]
    batch["original"] = [it["original"] for it in good]
    batch["errors"] = [(it["index"], it["error"]) for it in items if "error" in it]
    return batch


@dataclass
class PredictSummary:
    """What ``predict_images`` wrote: the number of images read, skipped (with reasons) and detections kept."""

    num_images: int = 0
    num_detections: int = 0
    skipped: list[str] = field(default_factory=list)
    detections_json: Path | None = None
    images_json: Path | None = None
    drawings: list[Path] = field(default_factory=list)


@torch.no_grad()
def predict_images(
    model: torch.nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    class_names: Sequence[str],
    *,
    min_size: int,
    max_size: int,
    size_divisibility: int = 32,
    score_thresh: float = 0.3,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    num_workers: int = 0,
    draw: bool = True,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    category_ids: Sequence[int] | None = None,
) -> PredictSummary:
    """Detect objects in ``inputs`` (files or folders) with ``model`` and write the results to ``out_dir``.

    Writes ``detections.json`` (COCO results format: ``image_id``, ``category_id`` = ``category_ids[label]``,
    by default label + 1, ``bbox`` XYWH in
    original-image pixels, ``score``; detections with score >= ``score_thresh``), ``images.json`` (``images``:
    id, file_name, height, width; ``categories``: id, name) and, with ``draw``, one PNG per image with the boxes,
    class names and scores drawn, named as :func:`output_names` says. Images inside ``out_dir`` are not read
    (an output folder within an input folder), and ``out_dir`` may not be an input folder. A file that cannot be
    decoded or whose header claims more than ``max_pixels`` pixels (INPUT.MAX_IMAGE_PIXELS; None or <= 0: no
    limit) is skipped and listed with its reason in the summary's ``skipped``.
    """
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
    images = collect_images(inputs, exclude=out_dir)
    names = output_names(images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = ImageFiles([file for file, _ in images], min_size, max_size, keep_original=draw, max_pixels=max_pixels)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=functools.partial(_collate, size_divisibility=size_divisibility))
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    if len(category_ids) != len(class_names):
        raise ValueError(f"{len(category_ids)} category ids for {len(class_names)} class names")
    model.eval()
    summary = PredictSummary()
    detections: list[dict] = []
    image_entries: list[dict] = []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, dynamic_ncols=True):
        for index, reason in batch["errors"]:
            logger.warning("skipped %s: %s", images[index][0], reason)
            summary.skipped.append(f"{images[index][0]}: {reason}")
        if not batch["index"]:
            continue
        outputs = model(batch["images"].to(device, non_blocking=True),
                        batch["image_sizes"].to(device, non_blocking=True))
        for i, output in enumerate(outputs):
            index = batch["index"][i]
            (h, w), (height, width) = batch["image_sizes"][i].tolist(), batch["orig_sizes"][i].tolist()
            keep = output["scores"] >= score_thresh
            output = {key: value[keep].cpu() for key, value in output.items()}
            detections.extend(to_coco_results(output, index + 1, (height / h, width / w), category_ids))
            image_entries.append({"id": index + 1, "file_name": str(images[index][0]), "height": height,
                                  "width": width})
            summary.num_images += 1
            summary.num_detections += len(output["scores"])
            if draw:
                boxes = output["boxes"].float() * torch.tensor([width / w, height / h] * 2)
                drawn = draw_detections(np.asarray(batch["original"][i]), boxes, output["labels"], output["scores"],
                                        class_names, score_thresh=score_thresh)
                path = out_dir / names[index]
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(drawn).save(path)
                summary.drawings.append(path)
    summary.detections_json = out_dir / "detections.json"
    summary.detections_json.write_text(json.dumps(detections))
    summary.images_json = out_dir / "images.json"
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, class_names)]
    summary.images_json.write_text(json.dumps({"images": image_entries, "categories": categories}, indent=1))
    logger.info("predict: %d images, %d detections with score >= %.2f, %d skipped -> %s", summary.num_images,
                summary.num_detections, score_thresh, len(summary.skipped), out_dir)
    return summary

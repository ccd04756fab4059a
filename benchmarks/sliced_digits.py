"""AP and seconds per image with and without sliced inference (TEST.SLICE) on large images built from digits
scenes (issue 19): each canvas is a GRID x GRID mosaic of digits_val scenes in 256 x 256 cells, so that at the
demo's test size (short side 192) the whole canvas shrinks GRID * 256 / 192 times and the digits become tiny.

    python benchmarks/sliced_digits.py --weights RUN/model_final.pth [--grid 4] [--images 20] [--out output/sliced]

Prints one line per variant: full image at the test size; tiles of 256 x 256 overlapping by 0.2, with and without
the full-image pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from od2.cli import load_trained_model
from od2.config import load_config
from od2.data.catalog import get_dataset, register_coco_instances
from od2.evaluation.evaluate import evaluate_model

CONFIG = "configs/digits/retinanet_lite0.yaml"
CELL = 256


def build_canvases(out: Path, grid: int, count: int, datasets_root: str) -> Path:
    """``count`` canvases of grid x grid digits_val scenes (top-left in their 256 x 256 cells, black around), as a
    COCO json whose boxes are the scenes' boxes shifted by their cell; returns the json path."""
    info = get_dataset("digits_val", datasets_root)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--out", default="output/sliced_digits")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config, ["DATASETS.TEST=[digits_large]", "DATALOADER.NUM_WORKERS=0"])
    register_coco_instances("digits_large", build_canvases(out, args.grid, args.images, base.DATASETS.ROOT or
                                                           "datasets"), out)
    model, _ = load_trained_model(base, args.weights)
    variants = {"full image at the test size": [],
                "tiles 256x256, overlap 0.2, + full image": ["TEST.SLICE.ENABLED=True", "TEST.SLICE.SIZE=[256,256]"],
                "tiles 256x256, overlap 0.2, tiles only": ["TEST.SLICE.ENABLED=True", "TEST.SLICE.SIZE=[256,256]",
                                                           "TEST.SLICE.FULL_IMAGE=False"]}
    print(f"{args.images} canvases of {args.grid * CELL}x{args.grid * CELL} ({args.grid}x{args.grid} digits scenes)")
    for name, overrides in variants.items():
        cfg = load_config(args.config, ["DATASETS.TEST=[digits_large]", "DATALOADER.NUM_WORKERS=0", *overrides])
        start = time.perf_counter()
        summary = evaluate_model(cfg, model, torch.device("cpu"), "digits_large", out / "eval", quiet=True)
        print(f"{name}: AP {100 * summary['AP']:.1f}, AP50 {100 * summary['AP50']:.1f}, APs "
              f"{100 * summary['APs']:.1f}, {summary['s_per_img']:.3f} s/img model time "
              f"({time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
    main()

"""Evaluation gets past an image that fails to decode: it scores the rest and says which it skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from od2.config import load_config
from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.evaluation.coco_evaluator import evaluate_detections
from od2.evaluation.evaluate import evaluate_model

CONFIG = Path(__file__).resolve().parents[2] / "configs/digits/retinanet_lite0.yaml"


@pytest.mark.slow  # about 15 s: two evaluations of the digits model
def test_evaluation_scores_the_rest_and_names_the_skipped_image(tmp_path, confident_model, capsys):
    paths = ensure_digits(tmp_path / "digits", num_train=2, num_val=4, seed=3)
    name = f"skip_eval_{tmp_path.name}"
    register_coco_instances(name, paths["val"].json_file, paths["val"].image_root)
    cfg = load_config(CONFIG, ["DATALOADER.NUM_WORKERS=0"])
    clean = evaluate_model(cfg, confident_model, torch.device("cpu"), name, tmp_path / "clean", quiet=True)
    assert clean["num_images"] == 4 and clean["skipped_images"] == []

    gt = json.loads(Path(paths["val"].json_file).read_text())
    victim = gt["images"][1]
    path = Path(paths["val"].image_root) / victim["file_name"]
    stat = path.stat()
    # Broken after the integrity check cached it as sound: same size and mtime, so only decoding finds out.
    path.write_bytes(b"\0" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    summary = evaluate_model(cfg, confident_model, torch.device("cpu"), name, tmp_path / "broken")
    printed = capsys.readouterr().out
    assert summary["num_images"] == 3
    assert [(s["image_id"], s["file_name"]) for s in summary["skipped_images"]] == [(victim["id"], str(path))]
    assert "3 images scored, 1 skipped" in printed and f"skipped image id {victim['id']} {path}" in printed
    # The numbers are those of the other three images alone, scored by the evaluator on their own ground truth.
    detections = json.loads((tmp_path / "broken" / "detections.json").read_text())
    clean_detections = json.loads((tmp_path / "clean" / "detections.json").read_text())
    assert detections == [d for d in clean_detections if d["image_id"] != victim["id"]]
    rest = {**gt, "images": [im for im in gt["images"] if im["id"] != victim["id"]],
            "annotations": [a for a in gt["annotations"] if a["image_id"] != victim["id"]]}
    assert summary["AP"] == evaluate_detections(rest, detections).as_dict()["AP"]
    saved = json.loads((tmp_path / "broken" / "coco_summary.json").read_text())
    assert saved["num_images"] == 3 and saved["skipped_images"][0]["image_id"] == victim["id"]

"""``od2 predict``: input collection, output names, class names from checkpoints, and detections identical to the
evaluation pipeline's on the same images (an independent path: DetectionDataset + run_inference)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from od2.cli import main
from od2.config import load_config
from od2.data.datasets.coco import load_coco_json
from od2.data.datasets.digits import ensure_digits
from od2.data.loader import build_test_loader
from od2.detector import weights_to_load
from od2.evaluation.inference import run_inference
from od2.evaluation.pipeline import InferencePipeline
from od2.evaluation.predict import (
    checkpoint_category_ids,
    checkpoint_class_names,
    collect_images,
    output_names,
    predict_images,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"


def pipeline_of(model, class_names, *overrides: str) -> InferencePipeline:
    """The digits config's inference pipeline around ``model``, with ``overrides``."""
    return InferencePipeline(load_config(CONFIG, ["MODEL.DEVICE=cpu", *overrides]), model, class_names)


def touch_image(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


def test_collect_images_files_folders_and_errors(tmp_path):
    a = touch_image(tmp_path / "in" / "a.JPG")
    b = touch_image(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "notes.txt").write_text("x")
    single = touch_image(tmp_path / "c.bmp")
    found = collect_images([tmp_path / "in", single, a])  # a twice: kept once
    assert found == [(a, tmp_path / "in"), (b, tmp_path / "in"), (single, single)]
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        collect_images([tmp_path / "empty"])


def test_collect_images_leaves_out_the_output_folder(tmp_path):
    a = touch_image(tmp_path / "in" / "a.png")
    touch_image(tmp_path / "in" / "preds" / "a.png")  # the drawing of a.png by an earlier run
    touch_image(tmp_path / "in" / "preds_old" / "b.png")  # a folder whose name only starts like it
    b = tmp_path / "in" / "preds_old" / "b.png"
    assert collect_images([tmp_path / "in"], exclude=tmp_path / "in" / "preds") == [(a, tmp_path / "in"),
                                                                                  (b, tmp_path / "in")]
    # the same folder named another way: relative to the current directory, or through ".."
    assert collect_images([tmp_path / "in"], exclude=tmp_path / "in" / "x" / ".." / "preds")[0] == (a, tmp_path / "in")
    with pytest.raises(ValueError, match="output folder .* is the input folder"):
        collect_images([tmp_path / "in"], exclude=tmp_path / "in")


def test_output_names_keep_subfolders_and_never_clash(tmp_path):
    root = tmp_path / "in"
    images = [(root / "x" / "a.jpg", root), (root / "a.jpg", root), (tmp_path / "a.png", tmp_path / "a.png"),
              (tmp_path / "other" / "a.jpg", tmp_path / "other" / "a.jpg")]
    assert output_names(images) == ["x/a.png", "a.png", "a_1.png", "a_2.png"]


def test_checkpoint_category_ids():
    """A checkpoint's ids (torchvision's COCO weights carry COCO's, 1..90 with gaps) name its labels; else label + 1."""
    assert checkpoint_category_ids({"category_ids": [1, 3, 90], "model": {}}, 3) == [1, 3, 90]
    assert checkpoint_category_ids({"model": {}}, 3) == [1, 2, 3]
    assert checkpoint_category_ids({"category_ids": [1, 3, 90], "model": {}}, 2) == [1, 2]  # not this model's


def test_checkpoint_class_names():
    assert checkpoint_class_names({"class_names": ["cat", "dog"], "model": {}}, 9) == ["cat", "dog"]
    state = {"head.cls_score.weight": torch.zeros(9 * 4, 8, 3, 3)}
    assert checkpoint_class_names({"model": state}, 9) == ["0", "1", "2", "3"]
    assert checkpoint_class_names({"model": state}, 9, num_classes=2) == ["0", "1"]
    with pytest.raises(ValueError, match="MODEL.RETINANET.NUM_CLASSES"):
        checkpoint_class_names({"model": {}}, 9)


@pytest.fixture(scope="module")
def digits_val(tmp_path_factory):
    paths = ensure_digits(tmp_path_factory.mktemp("predict_digits"), num_train=2, num_val=4, seed=3)
    return load_coco_json(paths["val"].json_file, paths["val"].image_root, name="digits_val")


def test_predict_matches_the_evaluation_pipeline(digits_val, confident_model, tmp_path):
    cfg = load_config(CONFIG)
    loader = build_test_loader(digits_val.records, min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST,
                               num_workers=0, size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)
    pipeline = InferencePipeline(cfg, confident_model, digits_val.class_names, digits_val.category_ids)
    reference = run_inference(pipeline, loader, progress=False)
    by_file = defaultdict(list)
    file_of = {r["image_id"]: r["file_name"] for r in digits_val.records}
    for det in reference.detections:
        if det["score"] >= 0.3:
            by_file[Path(file_of[det["image_id"]]).name].append(det)

    files = [Path(r["file_name"]) for r in digits_val.records]
    summary = predict_images(pipeline_of(confident_model, digits_val.class_names), files, tmp_path / "out",
                             score_thresh=0.3, batch_size=1, progress=False)
    detections = json.loads(summary.detections_json.read_text())
    images = json.loads(summary.images_json.read_text())
    name_of = {im["id"]: Path(im["file_name"]).name for im in images["images"]}
    assert summary.num_images == 4 and summary.skipped == [] and len(detections) == summary.num_detections > 20
    got = defaultdict(list)
    for det in detections:
        got[name_of[det["image_id"]]].append(det)
    assert set(got) == set(by_file)
    for name, dets in got.items():
        want = by_file[name]
        assert len(dets) == len(want)
        np.testing.assert_allclose([d["bbox"] for d in dets], [d["bbox"] for d in want], atol=2e-3)
        np.testing.assert_allclose([d["score"] for d in dets], [d["score"] for d in want], atol=1e-4)
        # category ids: label + 1 in predict; the digits json uses ids 1..10 for labels 0..9 as well
        assert [d["category_id"] for d in dets] == [d["category_id"] for d in want]
    assert [c["name"] for c in images["categories"]] == digits_val.class_names
    assert len(summary.drawings) == 4 and all(p.suffix == ".png" and p.is_file() for p in summary.drawings)
    drawn = np.asarray(Image.open(summary.drawings[0]))
    assert drawn.shape == (images["images"][0]["height"], images["images"][0]["width"], 3)


def test_predict_cli_skips_bad_files_and_reports(digits_val, confident_model, tmp_path, capsys):
    weights = tmp_path / "model.pth"
    torch.save({"model": confident_model.state_dict(), "class_names": digits_val.class_names}, weights)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for record in digits_val.records[:2]:
        (inputs / Path(record["file_name"]).name).write_bytes(Path(record["file_name"]).read_bytes())
    (inputs / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    code = main(["predict", "--config", str(CONFIG), "--weights", str(weights), str(inputs), "--out", str(out),
                 "MODEL.DEVICE=cpu", "--score-thresh", "0.5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 images" in printed and "skipped" in printed and "broken.png" in printed
    assert "not an image format" in printed
    assert len(list(out.glob("*.png"))) == 2 and (out / "detections.json").is_file()
    assert all(d["score"] >= 0.5 for d in json.loads((out / "detections.json").read_text()))
    assert main(["predict", "--config", str(CONFIG), "--weights", str(weights), str(tmp_path / "missing")]) == 2


def test_predict_cli_writes_the_checkpoint_category_ids(digits_val, confident_model, tmp_path):
    """A checkpoint with category ids (as torchvision's COCO weights give) has them in detections.json and
    images.json instead of label + 1."""
    weights = tmp_path / "model.pth"
    ids = [10 * (label + 1) for label in range(10)]
    torch.save({"model": confident_model.state_dict(), "class_names": digits_val.class_names, "category_ids": ids},
               weights)
    out = tmp_path / "out"
    assert main(["predict", "--config", str(CONFIG), "--weights", str(weights), digits_val.records[0]["file_name"],
                 "--out", str(out), "--no-draw", "MODEL.DEVICE=cpu"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= set(ids)
    categories = json.loads((out / "images.json").read_text())["categories"]
    assert [c["id"] for c in categories] == ids


def test_predict_twice_into_a_folder_inside_its_input_reads_the_same_images(digits_val, confident_model, tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for record in digits_val.records[:2]:
        (inputs / Path(record["file_name"]).name).write_bytes(Path(record["file_name"]).read_bytes())
    runs = []
    for _ in range(2):
        pipeline = pipeline_of(confident_model, digits_val.class_names, "INPUT.MIN_SIZE_TEST=64",
                               "INPUT.MAX_SIZE_TEST=96")
        summary = predict_images(pipeline, [inputs], inputs / "predictions", progress=False)
        runs.append(json.loads(summary.images_json.read_text())["images"])
    assert len(runs[0]) == 2 and runs[1] == runs[0]
    assert len(list((inputs / "predictions").rglob("*.png"))) == 2  # no drawings of drawings


def test_predict_cli_skips_an_image_over_the_pixel_limit_and_predicts_the_others(digits_val, confident_model,
                                                                                 tmp_path, capsys):
    weights = tmp_path / "model.pth"
    torch.save({"model": confident_model.state_dict(), "class_names": digits_val.class_names}, weights)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for record in digits_val.records[:2]:
        (inputs / Path(record["file_name"]).name).write_bytes(Path(record["file_name"]).read_bytes())
    limit = max(Image.open(r["file_name"]).size[0] * Image.open(r["file_name"]).size[1]
                for r in digits_val.records[:2])
    touch_image(inputs / "large.png", size=(limit, 2))  # twice the limit's pixels, a valid image
    out = tmp_path / "out"
    code = main(["predict", "--config", str(CONFIG), "--weights", str(weights), str(inputs), "--out", str(out),
                 "MODEL.DEVICE=cpu", f"INPUT.MAX_IMAGE_PIXELS={limit}", "--no-draw"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 images" in printed
    skipped = [line for line in printed.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "large.png" in skipped[0]
    assert f"{limit}x2 = {2 * limit} pixels" in skipped[0] and "INPUT.MAX_IMAGE_PIXELS" in skipped[0]
    predicted = json.loads((out / "images.json").read_text())["images"]
    assert sorted(Path(i["file_name"]).name for i in predicted) == sorted(
        Path(r["file_name"]).name for r in digits_val.records[:2])


def test_predict_weights_by_file_url_gives_the_local_files_detections(digits_val, confident_model, tmp_path,
                                                                      monkeypatch, capsys):
    """``--weights file://...`` downloads into torch's hub cache ($TORCH_HOME) and predicts exactly as the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = tmp_path / "server" / "digits.pth"
    weights.parent.mkdir()
    torch.save({"model": confident_model.state_dict(), "class_names": digits_val.class_names}, weights)
    image = Path(digits_val.records[0]["file_name"])
    assert main(["predict", "--config", str(CONFIG), "--weights", weights.as_uri(), str(image), "--out",
                 str(tmp_path / "out"), "--no-draw", "MODEL.DEVICE=cpu"]) == 0
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "digits.pth"
    assert cached.read_bytes() == weights.read_bytes()
    reference = predict_images(pipeline_of(confident_model, digits_val.class_names), [image], tmp_path / "reference",
                               draw=False, progress=False)
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    expected = json.loads(reference.detections_json.read_text())
    assert len(detections) == len(expected) > 0
    np.testing.assert_allclose([d["bbox"] for d in detections], [d["bbox"] for d in expected], atol=1e-3)
    np.testing.assert_allclose([d["score"] for d in detections], [d["score"] for d in expected], atol=1e-5)
    capsys.readouterr()
    assert main(["predict", "--config", str(CONFIG), "--weights", "torchvision://ResNet50_Weights.NOPE",
                 str(image)]) == 2
    assert "ResNet50_Weights has no member 'NOPE'" in capsys.readouterr().err


def test_eval_predict_export_prefer_the_runs_trained_model_to_the_configs_initial_weights(tmp_path):
    """A config that trains from ImageNet weights (MODEL.WEIGHTS names a backbone) evaluates its run's
    model_final.pth once there is one; --weights overrides both."""
    cfg = load_config(CONFIG, [f"OUTPUT_DIR={tmp_path}", "MODEL.WEIGHTS=torchvision://ResNet50_Weights.IMAGENET1K_V1"])
    assert weights_to_load(None, cfg) == "torchvision://ResNet50_Weights.IMAGENET1K_V1"
    (tmp_path / "model_final.pth").write_bytes(b"")
    assert weights_to_load(None, cfg) == str(tmp_path / "model_final.pth")
    assert weights_to_load("mine.pth", cfg) == "mine.pth"
    cfg.MODEL.WEIGHTS = ""
    (tmp_path / "model_final.pth").unlink()
    assert weights_to_load(None, cfg) == str(tmp_path / "model_final.pth")  # so that the missing file is named

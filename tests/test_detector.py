"""``od2.Detector``: built from a run folder or a config, called on every image form, its result type, and the same
detections as ``od2 eval`` on a real split (the digits validation images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from od2 import Detections, Detector
from od2.cli import main
from od2.config import load_config
from od2.data.datasets.digits import ensure_digits
from od2.evaluation.slicing import SlicedInference
from od2.evaluation.tta import TestTimeAugmentation

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"
CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Four digits validation scenes (a real split of the demo's dataset) and its dataset name."""
    paths = ensure_digits(tmp_path_factory.mktemp("detector_digits"), num_train=2, num_val=4, seed=5)
    val = paths["val"]
    return f"coco:{val.json_file}:{val.image_root}", json.loads(Path(val.json_file).read_text())["images"], \
        Path(val.image_root)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, confident_model, digits):
    """A finished run folder: config.yaml (testing on the digits split) and model_final.pth."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(CONFIG, ["MODEL.DEVICE=cpu", f"DATASETS.TEST=['{digits[0]}']", "TEST.IMS_PER_BATCH=2",
                               f"OUTPUT_DIR={run}", "MODEL.WEIGHTS="])
    (run / "config.yaml").write_text(cfg.dump())
    torch.save({"model": confident_model.state_dict(), "class_names": CLASSES}, run / "model_final.pth")
    return run


def image_files(digits) -> list[tuple[int, Path]]:
    _, images, root = digits
    return [(im["id"], root / im["file_name"]) for im in images]


def test_detector_gives_od2_evals_detections_on_a_real_split(run_dir, digits):
    assert main(["eval", "--config", str(run_dir / "config.yaml")]) == 0
    evaluated = json.loads((run_dir / "eval" / "detections.json").read_text())
    detector = Detector.from_run(run_dir)
    files = image_files(digits)
    results = detector([path for _, path in files])
    ours = [det for (image_id, _), result in zip(files, results) for det in result.to_coco(image_id)]
    assert len(ours) == len(evaluated) > 100
    key = lambda d: (d["image_id"], -d["score"], d["bbox"])  # noqa: E731
    assert sorted(ours, key=key) == sorted(evaluated, key=key)


def test_every_image_form_gives_the_same_detections(run_dir, digits):
    detector = Detector.from_run(run_dir, device="cpu")
    path = image_files(digits)[0][1]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    reference = detector(path)
    assert isinstance(reference, Detections) and len(reference) > 10
    forms = {
        "str": str(path), "PIL": Image.open(path), "array": rgb,
        "uint8 tensor": torch.from_numpy(rgb.copy()).permute(2, 0, 1),
        "float tensor": torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255,
    }
    bgr_forms = {"bgr array": rgb[:, :, ::-1],
                 "bgr tensor": torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1])).permute(2, 0, 1)}
    results = detector(list(forms.values())) + detector(list(bgr_forms.values()), bgr=True)
    for name, result in zip([*forms, *bgr_forms], results):
        assert torch.equal(result.labels, reference.labels), name
        torch.testing.assert_close(result.boxes, reference.boxes, msg=name)
        torch.testing.assert_close(result.scores, reference.scores, msg=name)
    batch = detector(torch.stack([forms["uint8 tensor"]] * 3))
    assert len(batch) == 3 and all(torch.equal(r.labels, reference.labels) for r in batch)
    grey = detector(rgb[:, :, 0])
    assert grey.image_size == reference.image_size


def test_the_result_type(run_dir, digits):
    detector = Detector.from_run(run_dir)
    path = image_files(digits)[0][1]
    result = detector(path)
    height, width = np.asarray(Image.open(path)).shape[:2]
    assert result.image_size == (height, width)
    assert result.boxes.shape == (len(result), 4) and result.boxes.dtype == torch.float32
    assert (result.boxes[:, 2:] >= result.boxes[:, :2]).all() and result.boxes[:, 2].max() <= width
    assert torch.all(result.scores[:-1] >= result.scores[1:])  # highest first
    assert result.names == [CLASSES[label] for label in result.labels.tolist()]
    thresh = float(result.scores.median())
    strong = result.above(thresh)
    assert 0 < len(strong) < len(result) and bool((strong.scores >= thresh).all())
    assert len(detector(path, score_thresh=thresh)) == len(strong)
    coco = strong.to_coco(7)
    x0, y0, x1, y1 = strong.boxes[0].tolist()
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == strong.labels[0].item() + 1
    np.testing.assert_allclose(coco[0]["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3)
    drawn = strong.draw()
    original = np.asarray(Image.open(path).convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()
    assert (strong.above(1.0).draw() == original).all()  # nothing to draw
    with pytest.raises(ValueError, match="score_thresh"):
        result.above(1.5)
    with pytest.raises(ValueError, match="pixels of a"):
        strong.draw(original[:10])
    assert "Detections(" in repr(strong) and f"{height}x{width}" in repr(strong)


def test_from_run_prefers_the_best_weights_and_names_what_is_missing(run_dir, tmp_path, confident_model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="no model_best.pth or model_final.pth.*no checkpoint"):
        Detector.from_run(run)
    state = confident_model.state_dict()
    torch.save({"model": state, "class_names": CLASSES}, run / "model_0000010.pth")
    with pytest.raises(FileNotFoundError, match="holds model_0000010.pth"):
        Detector.from_run(run, weights="final")
    best = {k: v.clone() for k, v in state.items()}
    best["head.cls_score.bias"] -= 5.0
    torch.save({"model": best, "class_names": CLASSES}, run / "model_best.pth")
    torch.save({"model": state, "class_names": CLASSES}, run / "model_final.pth")
    assert torch.equal(Detector.from_run(run).model.head.cls_score.bias, best["head.cls_score.bias"])
    assert torch.equal(Detector.from_run(run, weights="final").model.head.cls_score.bias,
                       state["head.cls_score.bias"])
    with pytest.raises(FileNotFoundError, match="not an od2 run folder"):
        Detector.from_run(tmp_path)


def test_from_config_takes_weights_overrides_and_a_loaded_config(run_dir):
    weights = str(run_dir / "model_final.pth")
    tta = Detector.from_config(CONFIG, weights, "cpu", ["TEST.AUG.ENABLED=True"])
    assert isinstance(tta.pipeline.predictor, TestTimeAugmentation) and tta.info()["mode"] == "tta"
    cfg = load_config(CONFIG, ["MODEL.DEVICE=cpu"])
    sliced = Detector.from_config(cfg, weights, overrides=["TEST.SLICE.ENABLED=True", "TEST.SLICE.SIZE=[64,64]"])
    assert isinstance(sliced.pipeline.predictor, SlicedInference) and sliced.pipeline.min_size is None
    assert not cfg.TEST.SLICE.ENABLED  # the caller's config is left as it was
    assert Detector.from_config(CONFIG, weights).class_names == CLASSES


def test_bad_inputs_are_named(run_dir):
    detector = Detector.from_run(run_dir)
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        detector(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector(torch.full((3, 8, 8), 200.0))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        detector(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="cannot read an image from int"):
        detector(3)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        detector("missing.png")


def test_predict_slice_flags_run_sliced_inference(run_dir, digits, tmp_path, capsys):
    path = image_files(digits)[0][1]
    out = tmp_path / "out"
    assert main(["predict", "--config", str(run_dir / "config.yaml"), str(path), "--out", str(out), "--no-draw",
                 "--slice", "128", "160", "--overlap", "0.25", "--no-full-image", "--score-thresh", "0.2"]) == 0
    written = json.loads((out / "detections.json").read_text())
    sliced = Detector.from_run(run_dir, overrides=["TEST.SLICE.ENABLED=True", "TEST.SLICE.SIZE=[128,160]",
                                                   "TEST.SLICE.OVERLAP=0.25", "TEST.SLICE.FULL_IMAGE=False"])
    expected = sliced(path, score_thresh=0.2).to_coco(1)
    assert written == expected and len(written) > 0
    assert written != Detector.from_run(run_dir)(path, score_thresh=0.2).to_coco(1)
    capsys.readouterr()
    assert main(["predict", "--config", str(run_dir / "config.yaml"), str(path), "--overlap", "0.3"]) == 2
    assert "--slice H W" in capsys.readouterr().err

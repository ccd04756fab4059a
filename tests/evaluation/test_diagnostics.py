"""What every evaluation writes beside the 12 numbers: per_class.json, thresholds.json, the confusion matrix and the
pictures, from `od2 eval-json --out DIR` and from evaluate_model; and the metrics.jsonl record of such a summary."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_coco_evaluator import make_detections, make_ground_truth
from test_per_class import reference_per_class

from od2.evaluation.per_class import PER_CLASS_AP_NAMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("pr_curves", "confusion_matrix", "f1_curves")


@pytest.fixture(scope="module")
def case() -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(11)
    gt = make_ground_truth(rng, num_images=20)
    return gt, make_detections(rng, gt)


def run_eval_json(tmp_path: Path, gt: dict, detections: list[dict], out: str) -> int:
    from od2.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    return main(["eval-json", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--out", out])


def test_eval_json_out_dir_writes_per_class_results_equal_to_pycocotools(tmp_path, case, capsys):
    gt, detections = case
    out = tmp_path / "eval"
    assert run_eval_json(tmp_path, gt, detections, str(out)) == 0
    printed = capsys.readouterr().out
    per_class = json.loads((out / "per_class.json").read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cat_id, expected in reference_per_class(gt, detections).items():
        got = [per_class[names[cat_id]][k] for k in PER_CLASS_AP_NAMES]
        np.testing.assert_allclose([np.nan if g is None else g for g in got],
                                   [np.nan if e is None else e for e in expected], rtol=0, atol=1e-9)
        assert f"\n{names[cat_id]} " in printed
    summary = json.loads((out / "coco_summary.json").read_text())
    assert set(summary) >= {"AP", "ARl"}
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert 0 < thresholds["overall"]["score_thresh"] <= 1 and set(thresholds["per_class"]) == set(names.values())
    assert f"{thresholds['overall']['score_thresh']:.4f}" in printed and "od2 predict --score-thresh" in printed
    for name in FIGURES:
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert confusion["classes"][-1] == "background" and matrix.shape == (5, 5) and matrix[-1, -1] == 0
    # Every non-crowd object is in its row once: found (any column) or missed (the background column).
    num_gt = [sum(a["category_id"] == c and not a["iscrowd"] for a in gt["annotations"]) for c in sorted(names)]
    np.testing.assert_array_equal(matrix[:-1].sum(axis=1), num_gt)


def test_eval_json_out_file_keeps_writing_the_summary_alone(tmp_path, case):
    gt, detections = case
    assert run_eval_json(tmp_path, gt, detections, str(tmp_path / "summary.json")) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["AP"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dt.json", "gt.json", "summary.json"]


@pytest.mark.slow  # about 15 s on the 2-core CPU: one evaluation of the digits model
def test_evaluate_model_returns_and_writes_per_class_results_and_pictures(tmp_path, confident_model, capsys):
    from od2.config import load_config
    from od2.data.catalog import register_coco_instances
    from od2.data.datasets.digits import ensure_digits
    from od2.evaluation.evaluate import evaluate_model

    paths = ensure_digits(tmp_path / "digits", num_train=1, num_val=2, seed=5)
    name = f"diagnostics_{tmp_path.name}"
    register_coco_instances(name, paths["val"].json_file, paths["val"].image_root)
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/digits/retinanet_lite0.yaml",
                      ["DATALOADER.NUM_WORKERS=0", "TEST.CONFUSION_SCORE_THRESH=0.2"])
    summary = evaluate_model(cfg, confident_model, torch.device("cpu"), name, tmp_path / "eval")
    printed = capsys.readouterr().out
    assert len(summary["per_class"]) == 10 and set(summary["figures"]) == set(FIGURES)
    assert json.loads((tmp_path / "eval" / "per_class.json").read_text()) == summary["per_class"]
    assert all(Path(path).read_bytes()[:8] == PNG_MAGIC for path in summary["figures"].values())
    assert json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())["score_thresh"] == 0.2
    assert "per-class results" in printed and "best score threshold by F1" in printed
    assert summary["diagnostics_seconds"] > 0 and isinstance(summary["best_f1"], float)


def test_metrics_writer_records_per_class_results_as_json_and_only_floats_as_scalars(tmp_path):
    from od2.engine.hooks.writers import MetricsWriter

    class Recorder:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append(tag)

    writer = MetricsWriter(tmp_path, period=1)
    writer.trainer = SimpleNamespace(ema=None)
    writer.tensorboard, writer.file = Recorder(), (tmp_path / "metrics.jsonl").open("a")
    summary = {"AP": 0.5, "AP50": 0.7, "best_f1": 0.6, "best_score_thresh": None,
               "per_class": {"a": {"AP": 0.5, "APs": None, "num_gt": 3, "num_dt": 4}},
               "figures": {"pr_curves": str(tmp_path / "pr_curves.png")}}
    writer.after_evaluation(9, summary)
    writer.file.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record["iteration"] == 10 and record["eval/per_class"] == summary["per_class"]
    assert record["eval/figures"] == summary["figures"]
    assert sorted(writer.tensorboard.scalars) == ["eval/AP", "eval/AP50", "eval/best_f1", "eval_per_class/a/AP",
                                                  "eval_per_class/a/num_dt", "eval_per_class/a/num_gt"]


def test_confusion_score_thresh_outside_0_1_is_refused_before_any_inference(tmp_path, case, capsys):
    from od2.config import ConfigError, load_config
    from od2.evaluation.evaluate import build_evaluator

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/digits/retinanet_lite0.yaml",
                      ["TEST.CONFUSION_SCORE_THRESH=1.5"])
    with pytest.raises(ConfigError, match=r"TEST\.CONFUSION_SCORE_THRESH .*1\.5"):
        build_evaluator(cfg)
    gt, detections = case
    from od2.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    assert main(["eval-json", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--out",
                 str(tmp_path / "out"), "--confusion-score-thresh", "-0.1"]) == 2
    assert "score threshold must be in [0, 1], got -0.1" in capsys.readouterr().err

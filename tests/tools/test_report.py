"""``od2 report``: the log's results document from run folders (settings, COCO block, table, curves)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from od2.cli import main
from od2.config import load_config
from od2.engine.run_info import write_run_info
from od2.tools.report import read_run, write_report

REPO = Path(__file__).resolve().parents[2]
STATS = dict(AP=0.339, AP50=0.521, AP75=0.36, APs=0.18, APm=0.374, APl=0.452, AR1=0.29, AR10=0.45, AR100=0.478,
             ARs=0.27, ARm=0.52, ARl=0.62)


def make_run(folder: Path, config: str, *, evaluated: bool = True, world_size: int = 3, iterations: int = 40):
    cfg = load_config(REPO / config, [f"OUTPUT_DIR={folder}"])
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(cfg.dump())
    write_run_info(folder, config, ["OUTPUT_DIR=x"])
    lines = [json.dumps({"iteration": i, "loss_cls": 1.0 / i, "loss_box_reg": 0.5 / i, "total_loss": 1.5 / i,
                         "lr": 0.02, "time": 36.0 * i}) for i in range(10, iterations + 1, 10)]
    if evaluated:
        lines.append(json.dumps({"iteration": iterations // 2, **{f"eval/{k}": v / 2 for k, v in STATS.items()}}))
        lines.append(json.dumps({"iteration": iterations, **{f"eval/{k}": v for k, v in STATS.items()}}))
        (folder / "eval").mkdir()
        (folder / "eval" / "coco_summary.json").write_text(json.dumps({**STATS, "s_per_img": 0.1313}))
    lines.append("{truncated")  # a torn last line (killed run) is skipped, not fatal
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    torch.save({"model": {}, "iteration": iterations, "world_size": world_size}, folder / "model_final.pth")
    (folder / "last_checkpoint").write_text("model_final.pth")
    return folder


def test_report_sections_table_and_curves(tmp_path):
    a = make_run(tmp_path / "a", "configs/coco/RetinaNet-EvoNormS-GIoU-WAA-Stitch-cosine.yaml")
    b = make_run(tmp_path / "b", "configs/coco/RetinaNet-BN.yaml", evaluated=False, world_size=1, iterations=20)
    c = make_run(tmp_path / "c", "configs/coco/RetinaNet-BN.yaml", world_size=1)
    out = write_report([a, b, c], tmp_path / "docs" / "results.md")
    text = out.read_text()
    # one section per run, named after its config; the same config twice is told apart by folder
    assert "## RetinaNet-EvoNormS-GIoU-WAA-Stitch-cosine\n" in text
    assert "## RetinaNet-BN (b)\n" in text and "## RetinaNet-BN (c)\n" in text
    section = text.split("## RetinaNet-EvoNormS-GIoU-WAA-Stitch-cosine\n")[1].split("## ")[0]
    for item in ["- batch_size: 4 on 3 processes", "- backbone resnet50, FrozenBN",
                 "- fpn normal: EvoNormS0, activation NA", "- Head normal: EvoNormS0, activation NA, 4 convs",
                 "- Loss: giou", "- LR decay: cosine, base lr 0.02", "- augmentation: WAA, Stitch 0.5",
                 "- iterator: 40 of 120000", "- train time: 0.40h", "- eval time: 0.1313s/img"]:
        assert item in section, item
    # the 12-line block exactly as pycocotools prints it
    assert " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.339" in section
    assert " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 0.620" in section
    row = "| RetinaNet-EvoNormS-GIoU-WAA-Stitch-cosine | 0.339 | 0.521 | 0.360 | 0.180 | 0.374 | 0.452 | 40 | 0.1313 |"
    assert row in text
    assert "| RetinaNet-BN (b) | - | - | - | - | - | - | 20 | - |" in text
    b_section = text.split("## RetinaNet-BN (b)\n")[1].split("## ")[0]
    assert "- eval time: not evaluated" in b_section and "- batch_size: 4 on 1 process\n" in b_section
    curves = sorted((tmp_path / "docs" / "results_curves").glob("*.png"))
    assert len(curves) == 3
    for curve in curves:
        assert curve.relative_to(out.parent).as_posix() in text
        with Image.open(curve) as im:
            assert im.size[0] > 500


def test_read_run_without_a_summary_uses_the_last_evaluation(tmp_path):
    folder = make_run(tmp_path / "r", "configs/coco/RetinaNet-GN.yaml")
    (folder / "eval" / "coco_summary.json").unlink()
    run = read_run(folder)
    assert run.stats == tuple(STATS.values()) and run.iterations == 40 and len(run.evals) == 2


def test_report_cli_errors_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.md")]) == 2
    assert "not an od2 run folder" in capsys.readouterr().err
    run = make_run(tmp_path / "ok", "configs/coco/RetinaNet-GN.yaml")
    assert main(["report", str(run), "--out", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("# od2 results")


def test_run_name_comes_from_run_json_then_the_log_of_older_folders(tmp_path):
    folder = make_run(tmp_path / "seed3", "configs/coco/RetinaNet-GN.yaml")
    (folder / "log.txt").write_text("[11/28 01:44:31 od2] INFO: config configs/other.yaml with overrides []\n")
    assert read_run(folder).name == "RetinaNet-GN"
    write_run_info(folder, folder / "config.yaml", [], resume=True)  # a resume keeps the start's record
    assert read_run(folder).name == "RetinaNet-GN"
    (folder / "run.json").unlink()  # a folder from before run.json: the line od2 train logged
    assert read_run(folder).name == "other"
    (folder / "log.txt").unlink()
    assert read_run(folder).name == "seed3"


def test_report_shows_the_per_class_table_best_threshold_and_links_the_eval_pictures(tmp_path):
    run = make_run(tmp_path / "runs" / "a", "configs/coco/RetinaNet-BN.yaml")
    bare = make_run(tmp_path / "runs" / "b", "configs/coco/RetinaNet-BN.yaml")
    per_class = {"RBC": {"AP": 0.412, "AP50": 0.8, "AP75": 0.35, "APs": None, "APm": 0.4, "APl": 0.5, "num_gt": 30,
                         "num_dt": 41, "best_f1": 0.75, "best_score_thresh": 0.41237},
                 "Platelets": {"AP": None, "AP50": None, "AP75": None, "APs": None, "APm": None, "APl": None,
                               "num_gt": 0, "num_dt": 2, "best_f1": 0.0, "best_score_thresh": None}}
    (run / "eval" / "per_class.json").write_text(json.dumps(per_class))
    (run / "eval" / "thresholds.json").write_text(json.dumps(
        {"overall": {"score_thresh": 0.38, "f1": 0.7, "precision": 0.72, "recall": 0.68}}))
    for name in ("pr_curves", "confusion_matrix"):  # no f1_curves.png: no link to it
        (run / "eval" / f"{name}.png").write_bytes(b"png")
    text = write_report([run, bare], tmp_path / "docs" / "results.md").read_text()
    section, bare_section = text.split("## RetinaNet-BN (a)\n")[1].split("## RetinaNet-BN (b)\n")
    assert "| RBC | 41.2 | 80.0 | 35.0 | - | 40.0 | 50.0 | 30 | 41 | 0.750 | 0.4124 |" in section
    assert "| Platelets | - | - | - | - | - | - | 0 | 2 | 0.000 | - |" in section
    assert "Best score threshold by F1 (IoU 0.5): 0.3800 (F1 0.700" in section and "--score-thresh" in section
    assert "[precision-recall curves](../runs/a/eval/pr_curves.png)" in section
    assert "[confusion matrix](../runs/a/eval/confusion_matrix.png)" in section and "f1_curves" not in section
    assert "| class |" not in bare_section and "Evaluation pictures" not in bare_section

"""Every command that names a dataset takes every form of name: ``coco:``, ``voc:`` and ``yolo:`` paths (and
catalog names) in ``od2 train``, ``eval``, ``data show|stats|convert``; ``od2 predict`` names the classes of the model
trained on them. Tiny datasets written by the ``path_datasets`` fixture, and BCCD as ``voc:`` by path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from od2.cli import main
from od2.data import catalog
from od2.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# A small random-weight model on 64-pixel images: one training step and an evaluation take seconds.
TINY = [
    "MODEL.DEVICE=cpu", "MODEL.BACKBONE.NAME=efficientnet_lite0", "MODEL.BACKBONE.PRETRAINED=false",
    "MODEL.BACKBONE.NORM=BN", "MODEL.FPN.OUT_CHANNELS=16", "MODEL.RETINANET.NUM_CONVS=1",
    "MODEL.RETINANET.NORM=GN", "MODEL.RETINANET.IN_FEATURES=[P3,P4,P5]",
    "MODEL.ANCHOR_GENERATOR.SIZES=[[12,16,20],[32,40,50],[64,80,100]]",
    "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=96", "INPUT.MIN_SIZE_TEST=64", "INPUT.MAX_SIZE_TEST=96",
    "SOLVER.IMS_PER_BATCH=2", "SOLVER.MAX_ITER=1", "SOLVER.WARMUP_ITERS=0", "DATALOADER.NUM_WORKERS=0",
    "TEST.EVAL_PERIOD=0", "SOLVER.CHECKPOINT_PERIOD=0",
]


@pytest.fixture(autouse=True)
def quiet_logging_and_fresh_catalog(monkeypatch):
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    monkeypatch.setattr(catalog, "_cache", {})


def dataset_overrides(train: str, test: str) -> list[str]:
    # The names go in as YAML lists with quoted items, as the README writes them for bash.
    return [f"DATASETS.TRAIN=['{train}']", f"DATASETS.TEST=['{test}']"]


# One training run per format, ~10 s each on 2 busy cores: VOC's stays in the quick suite.
@pytest.mark.parametrize("fmt", [pytest.param("coco", marks=pytest.mark.slow), "voc",
                                 pytest.param("yolo", marks=pytest.mark.slow)])
def test_train_eval_predict_on_a_dataset_named_by_path(path_datasets, fmt, tmp_path, capsys):
    names = path_datasets.names[fmt]
    run = tmp_path / "run"
    overrides = [*TINY, *dataset_overrides(names["train"], names["test"]), f"OUTPUT_DIR={run}"]
    assert main(["train", "--config", "digits/retinanet_lite0", *overrides]) == 0
    assert load_checkpoint(run / "model_final.pth")["class_names"] == path_datasets.classes

    assert main(["eval", "--config", "digits/retinanet_lite0", *overrides]) == 0
    summary = json.loads((run / "eval" / "coco_summary.json").read_text())
    assert summary["dataset"] == names["test"] and summary["num_images"] == len(path_datasets.boxes["test"])

    images = Path(catalog.get_dataset(names["test"]).records[0]["file_name"]).parent
    out = tmp_path / "predict"
    assert main(["predict", "--config", "digits/retinanet_lite0", "--weights", str(run / "model_final.pth"),
                 "--out", str(out), "--score-thresh", "0", "--no-draw", str(images), *TINY]) == 0
    written = json.loads((out / "images.json").read_text())
    assert [c["name"] for c in written["categories"]] == path_datasets.classes


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_data_stats_show_and_convert_take_each_form(path_datasets, fmt, tmp_path, capsys):
    names = path_datasets.names[fmt]
    boxes = path_datasets.boxes["train"]
    assert main(["data", "stats", "--dataset", names["train"], "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_images"] == len(boxes) and stats["num_boxes"] == sum(len(b) for b in boxes.values())

    config = tmp_path / "tiny.yaml"
    config.write_text("_BASE_: " + str(REPO / "configs/digits/retinanet_lite0.yaml")
                      + "\n")
    assert main(["data", "stats", "--config", str(config), "--split", "test", "--json",
                 *dataset_overrides(names["train"], names["test"])]) == 0
    test_stats = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in test_stats["classes"]] == path_datasets.classes

    assert main(["data", "show", "--config", str(config), "-n", "2", "--out", str(tmp_path / "show"), *TINY,
                 *dataset_overrides(names["train"], names["test"])]) == 0
    assert len(list((tmp_path / "show").glob("*.png"))) == 3  # two images and the overview

    assert main(["data", "convert", "--dataset", names["train"], "--to", "voc", "--out", str(tmp_path / "voc")]) == 0
    printed = capsys.readouterr().out
    split_file = tmp_path / "voc" / "ImageSets" / "Main" / "train.txt"
    assert sorted(split_file.read_text().split()) == sorted(boxes)
    assert re.search(rf"after .*: {len(boxes)} images, {sum(len(b) for b in boxes.values())} boxes, 2 classes",
                     printed)


def test_convert_refuses_two_inputs(path_datasets, capsys):
    assert main(["data", "convert", "--dataset", path_datasets.names["voc"]["train"], "--from", "voc", "--input",
                 "x", "--to", "coco", "--out", "y"]) == 2
    assert "--dataset or with --from and --input, not both" in capsys.readouterr().err


def test_bccd_by_path_in_data_stats(bccd_datasets_root, capsys):
    """BCCD's test split as a VOC folder by path: counts against its xml files, read with a regular expression."""
    root = bccd_datasets_root / "bccd"
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
    objects = [name for i in ids for name in re.findall(r"<name>\s*(\w+)\s*</name>",
                                                        (root / "Annotations" / f"{i}.xml").read_text())]
    assert main(["data", "stats", "--dataset", f"voc:{root}:test", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_images"] == len(ids)
    per_class = {c["name"]: c["boxes"] for c in stats["classes"]}
    # VOC drops boxes drawn as clicks (xmax <= xmin), which the loader counts as degenerate.
    assert sum(per_class.values()) + stats["skipped"].get("degenerate_box", 0) == len(objects)
    assert set(per_class) == set(objects)


@pytest.mark.slow  # trains 2 iterations on BCCD and evaluates its 72 test images
def test_the_readme_fine_tuning_commands_run_in_bash_on_bccd(bccd_datasets_root, tmp_path):
    """The README's two commands, as written, in bash, on BCCD by path; `od2` is this checkout's CLI, with a
    training budget of 2 small iterations appended."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(DATA=[^\n]*\nod2 train --config bccd/[^\n]*\nod2 eval [^\n]*\n)```", readme)
    assert block, "the README's fine-tuning example (DATA=..., od2 train, od2 eval) was not found"
    commands = block.group(1).replace("DATA=/data/BCCD", f"DATA={bccd_datasets_root / 'bccd'}", 1)
    fast = ("SOLVER.MAX_ITER=2 SOLVER.WARMUP_ITERS=0 TEST.EVAL_PERIOD=0 SOLVER.CHECKPOINT_PERIOD=0 "
            "INPUT.MIN_SIZE_TRAIN=[128] INPUT.MAX_SIZE_TRAIN=192 INPUT.MIN_SIZE_TEST=128 INPUT.MAX_SIZE_TEST=192")
    script = (f'od2() {{ if [ "$1" = train ]; then "{sys.executable}" -m od2.cli "$@" {fast}; '
              f'else "{sys.executable}" -m od2.cli "$@"; fi; }}\nset -e\n{commands}')
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "output" / "my_cells"
    assert load_checkpoint(run / "model_final.pth")["class_names"] == ["Platelets", "RBC", "WBC"]
    summary = json.loads((run / "eval" / "coco_summary.json").read_text())
    assert summary["num_images"] == 72 and summary["dataset"] == f"voc:{bccd_datasets_root / 'bccd'}:test"

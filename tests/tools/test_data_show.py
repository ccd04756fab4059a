"""``od2 data show``: PNGs of what the model is fed, with boxes drawn, for train (augmented), test and mosaics."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from od2.cli import main
from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.utils.visualize import class_color

TRAIN, VAL = "show_digits_train", "show_digits_val"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("show_data")
    paths = ensure_digits(root, num_train=12, num_val=3, seed=2)
    for name, split in ((TRAIN, "train"), (VAL, "val")):
        try:
            register_coco_instances(name, paths[split].json_file, paths[split].image_root)
        except ValueError:  # registered earlier in this session
            pass
    path = root / "show.yaml"
    path.write_text(f"DATASETS:\n  TRAIN: [{TRAIN}]\n  TEST: [{VAL}]\nINPUT:\n  MIN_SIZE_TRAIN: [96, 128]\n"
                    "  MAX_SIZE_TRAIN: 160\n  MIN_SIZE_TEST: 128\n  MAX_SIZE_TEST: 160\nSOLVER:\n  IMS_PER_BATCH: 4\n"
                    "DATALOADER:\n  NUM_WORKERS: 0\n")
    return path


def drawn_pngs(out):
    return sorted(p for p in out.iterdir() if p.name != "overview.png")


@pytest.mark.parametrize("extra", [[], ["INPUT.DATAPROCESS=WAA", "INPUT.STITCH=1.0"], ["--mosaic"]])
def test_show_writes_the_augmented_training_images_with_boxes(config, tmp_path, extra):
    out = tmp_path / "show"
    assert main(["data", "show", "--config", str(config), "-n", "6", "--out", str(out), *extra]) == 0
    pngs = drawn_pngs(out)
    assert len(pngs) == 6 and (out / "overview.png").is_file()
    for png in pngs:
        image = np.asarray(Image.open(png).convert("RGB"))
        assert image.shape[0] % 32 == 0 and image.shape[1] % 32 == 0  # padded batch images, as the model sees them
        # Some class outline colour is drawn (digits classes 0..9).
        assert any((image == class_color(label)).all(-1).sum() > 20 for label in range(10)), png.name
    if "--mosaic" in extra:
        assert all("mosaic" in p.name for p in pngs)


def test_show_test_split_draws_the_whole_small_test_set(config, tmp_path):
    out = tmp_path / "show_test"
    assert main(["data", "show", "--config", str(config), "--split", "test", "-n", "10", "--out", str(out)]) == 0
    assert len(drawn_pngs(out)) == 3  # the test set has 3 images


def test_show_rejects_bad_arguments(config, tmp_path, capsys):
    assert main(["data", "show", "--config", str(config), "--split", "test", "--mosaic", "--out",
                 str(tmp_path)]) == 2
    assert "--mosaic" in capsys.readouterr().err
    assert main(["data", "show", "--config", str(config), "--out", str(tmp_path), "INPUT.DATAPROCESS=XX"]) == 2
    assert "INPUT.DATAPROCESS" in capsys.readouterr().err

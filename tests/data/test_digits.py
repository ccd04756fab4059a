"""The generated digits dataset: determinism, tight boxes, size buckets, splits, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from od2.data.datasets import digits
from od2.data.datasets.digits import (
    INK_THRESHOLD,
    NUM_TRAIN_GLYPHS,
    ensure_digits,
    load_digits_split,
    load_glyphs,
    render_scene,
)

SEED = 0


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small generated dataset: 90 train and 30 val scenes."""
    root = tmp_path_factory.mktemp("digits_root")
    return root, ensure_digits(root, num_train=90, num_val=30, seed=SEED)


@pytest.fixture(scope="module")
def glyphs():
    return load_glyphs()


def annotations_per_image(coco: dict) -> dict[int, list[dict]]:
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    return per_image


def test_generation_is_deterministic(tmp_path):
    a = ensure_digits(tmp_path / "a", num_train=6, num_val=3, seed=5)
    b = ensure_digits(tmp_path / "b", num_train=6, num_val=3, seed=5)
    for split in ("train", "val"):
        assert a[split].json_file.read_bytes() == b[split].json_file.read_bytes()
        for png in sorted(a[split].image_root.glob("*.png")):
            assert png.read_bytes() == (b[split].image_root / png.name).read_bytes()
    c = ensure_digits(tmp_path / "c", num_train=6, num_val=3, seed=6)
    assert c["train"].json_file.read_bytes() != a["train"].json_file.read_bytes()


def test_layout_and_categories(generated):
    root, paths = generated
    assert paths["train"].json_file == root / "digits" / "annotations" / "train.json"
    assert paths["val"].image_root == root / "digits" / "val"
    coco = json.loads(paths["train"].json_file.read_text())
    assert coco["categories"] == [{"id": d + 1, "name": str(d)} for d in range(10)]
    assert len(coco["images"]) == 90 and len(list(paths["train"].image_root.glob("*.png"))) == 90
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 11))


def test_images_hold_1_to_6_separated_boxes_inside_the_canvas(generated):
    _, paths = generated
    for split in ("train", "val"):
        coco = json.loads(paths[split].json_file.read_text())
        images = {img["id"]: img for img in coco["images"]}
        counts = []
        for image_id, anns in annotations_per_image(coco).items():
            counts.append(len(anns))
            img = images[image_id]
            with Image.open(paths[split].image_root / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) and im.mode == "RGB"
            assert 160 <= img["width"] <= 256 and 160 <= img["height"] <= 256
            xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
            assert (xyxy[:, :2] >= 0).all()
            assert (xyxy[:, 2] <= img["width"]).all() and (xyxy[:, 3] <= img["height"]).all()
            iou = box_iou(xyxy, xyxy) - torch.eye(len(anns))
            assert (iou < 0.1).all()
        assert min(counts) >= 1 and max(counts) <= 6
    assert max(counts) > 3  # several digits per image do occur


def test_size_buckets_match_the_target_shares(generated):
    _, paths = generated
    areas = np.array([a["area"] for a in json.loads(paths["train"].json_file.read_text())["annotations"]])
    small, large = (areas < 32**2).mean(), (areas > 96**2).mean()
    medium = 1.0 - small - large
    assert len(areas) > 200
    assert abs(small - 0.4) < 0.12 and abs(medium - 0.4) < 0.12 and abs(large - 0.2) < 0.1
    sides = np.sqrt(areas)
    assert sides.min() >= 8 and sides.max() <= 140


def test_boxes_are_tight_around_the_ink(glyphs):
    all_glyphs, labels = glyphs
    for i in range(20):
        rng = np.random.default_rng([SEED, 0, i])
        scene = render_scene(rng, all_glyphs[:NUM_TRAIN_GLYPHS], labels[:NUM_TRAIN_GLYPHS])
        for box, alpha in zip(scene.boxes.astype(int), scene.alpha_maps()):
            x1, y1, x2, y2 = box
            ink = alpha > INK_THRESHOLD
            assert ink[y1:y2, x1:x2].sum() == ink.sum()  # all ink inside the box
            inside = ink[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_saved_images_and_boxes_are_the_rendered_scenes(generated, glyphs):
    _, paths = generated
    all_glyphs, labels = glyphs
    coco = json.loads(paths["val"].json_file.read_text())
    per_image = annotations_per_image(coco)
    for img in coco["images"][:5]:
        index = img["id"] - 1
        scene = render_scene(
            np.random.default_rng([SEED, 1, index]), all_glyphs[NUM_TRAIN_GLYPHS:], labels[NUM_TRAIN_GLYPHS:]
        )
        saved = np.asarray(Image.open(paths["val"].image_root / img["file_name"]))
        np.testing.assert_array_equal(saved, scene.image)
        anns = per_image[img["id"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        np.testing.assert_array_equal(np.array(xyxy, dtype=np.float32).reshape(-1, 4), scene.boxes)
        assert [a["category_id"] - 1 for a in anns] == scene.labels.tolist()


def test_ink_contrasts_with_the_background(glyphs):
    all_glyphs, labels = glyphs
    luma = np.array([0.299, 0.587, 0.114])
    for i in range(10):
        scene = render_scene(np.random.default_rng([SEED, 0, i]), all_glyphs, labels)
        image_luma = scene.image.astype(float) @ luma / 255.0
        for box, alpha in zip(scene.boxes.astype(int), scene.alpha_maps()):
            x1, y1, x2, y2 = box
            patch, a = image_luma[y1:y2, x1:x2], alpha[y1:y2, x1:x2]
            solid_ink, clear = patch[a > 0.9], patch[a < 0.01]
            if len(solid_ink) and len(clear):
                assert abs(np.median(solid_ink) - np.median(clear)) > 0.25


def test_train_and_val_use_disjoint_glyphs(tmp_path, monkeypatch, glyphs):
    seen: list[np.ndarray] = []

    def spy(rng, pool, pool_labels):
        seen.append(pool)
        return render_scene(rng, pool, pool_labels)

    monkeypatch.setattr(digits, "render_scene", spy)
    ensure_digits(tmp_path, num_train=2, num_val=2)
    all_glyphs = glyphs[0]
    train_pools, val_pools = seen[:2], seen[2:]
    for pool in train_pools:
        np.testing.assert_array_equal(pool, all_glyphs[:NUM_TRAIN_GLYPHS])
    for pool in val_pools:
        np.testing.assert_array_equal(pool, all_glyphs[NUM_TRAIN_GLYPHS:])
    train_set = {g.tobytes() for g in all_glyphs[:NUM_TRAIN_GLYPHS]}
    assert len(val_pools[0]) == 397 and train_set.isdisjoint(g.tobytes() for g in val_pools[0])


def test_existing_dataset_is_reused_and_a_lost_race_discards_its_copy(tmp_path):
    paths = ensure_digits(tmp_path, num_train=2, num_val=1)
    before = paths["train"].json_file.stat().st_mtime_ns
    ensure_digits(tmp_path, num_train=2, num_val=1)
    assert paths["train"].json_file.stat().st_mtime_ns == before
    # Another process finished first: the rename fails, the finished copy stays, ours goes.
    params = json.loads((tmp_path / "digits" / "meta.json").read_text())
    digits._generate_atomically(tmp_path / "digits", params)
    assert paths["train"].json_file.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_other_parameters_on_disk_are_an_error(tmp_path):
    ensure_digits(tmp_path, num_train=2, num_val=1)
    with pytest.raises(ValueError, match="remove the folder to regenerate"):
        ensure_digits(tmp_path, num_train=3, num_val=1)


def test_load_digits_split(generated):
    root, _ = generated
    info = load_digits_split(root, "val", num_train=90, num_val=30, seed=SEED)
    assert info.name == "digits_val" and len(info) == 30 and info.num_classes == 10
    assert info.skipped == {"clipped_box": 0, "degenerate_box": 0}
    assert all(1 <= len(r["boxes"]) <= 6 for r in info.records)
    with pytest.raises(ValueError, match="splits"):
        load_digits_split(root, "test")

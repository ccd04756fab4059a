"""torchvision's COCO RetinaNets in od2: the same detections as torchvision itself, from the same weights file.

torchvision's ``retinanet_resnet50_fpn`` (v1) and ``..._v2`` are built with random (seeded) weights, spread so that
scores vary and non-maximum suppression has work to do, and saved as the state_dict file torchvision publishes.
od2 reads that file through ``load_checkpoint`` into configs/coco/torchvision/RetinaNet-R50-FPN-v{1,2}.yaml and runs
its own test pipeline (resize, normalisation, padding, inference, boxes back to original pixels); torchvision runs
its own backbone, FPN, head, anchors, decoding and NMS on od2's normalised canvas, and its ``resize_boxes`` maps boxes
back. Their detections must agree: boxes within 1e-3 px, scores, and labels (od2's in COCO category ids).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection import (
    RetinaNet_ResNet50_FPN_V2_Weights,
    RetinaNet_ResNet50_FPN_Weights,
    retinanet_resnet50_fpn,
    retinanet_resnet50_fpn_v2,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from od2.config import load_config
from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.data.loader import collate_batch, resize_for_test
from od2.engine.checkpoint import load_checkpoint
from od2.engine.setup import load_initial_weights
from od2.engine.trainer import Trainer
from od2.evaluation.predict import ImageFiles
from od2.modeling.build import build_model
from od2.modeling.torchvision_retinanet import convert_torchvision_retinanet
from od2.utils.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "coco" / "torchvision"
VERSIONS = {
    "v1": (retinanet_resnet50_fpn, RetinaNet_ResNet50_FPN_Weights.COCO_V1),
    "v2": (retinanet_resnet50_fpn_v2, RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1),
}
BOX_TOL, SCORE_TOL = 1e-3, 1e-5


def weights_file_name(version: str) -> str:
    """The file name torchvision's hub cache gives the published weights (the last part of the enum's URL)."""
    return Path(VERSIONS[version][1].url).name


def random_torchvision_retinanet(version: str) -> torch.nn.Module:
    """torchvision's model (91 COCO slots) with seeded weights that make image-dependent, spread scores.

    The defaults would not test much: unit BN statistics, a head initialised to N(0, 0.01) (every score is the
    prior) and identical class biases. v1's backbone norms become FrozenBatchNorm2d with eps 0, as torchvision loads
    its COCO_V1 file (``overwrite_eps``); v2's stay eval-mode BatchNorm2d (eps 1e-5), as torchvision builds v2.
    The ten unused slots and the background get a bias that keeps them below the score threshold, as trained
    COCO weights do.
    """
    build, _ = VERSIONS[version]
    torch.manual_seed(0)
    model = build(weights=None, weights_backbone=None, num_classes=91)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.3, 0.8, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
        for module in model.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, (2 / (9 * module.in_channels)) ** 0.5, generator=generator)
        model.head.regression_head.bbox_reg.weight.mul_(0.1)
        bias = model.head.classification_head.cls_logits.bias.view(-1, 91)
        bias.copy_(torch.randn(bias.shape, generator=generator) - 3.0)
        bias[:, [k for k in range(91) if k not in COCO_CATEGORY_IDS]] = -30.0
    if version == "v1":
        _freeze_batch_norms(model.backbone.body, eps=0.0)
    return model.eval()


def _freeze_batch_norms(module: torch.nn.Module, eps: float) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            _freeze_batch_norms(child, eps)


class CanvasTransform(torch.nn.Module):
    """Stands in for torchvision's GeneralizedRCNNTransform: the images arrive as od2's normalised, padded canvas
    (so there is nothing to resize or normalise), and boxes go back to original pixels with torchvision's
    ``resize_boxes``."""

    def __init__(self, image_sizes: list[tuple[int, int]], orig_sizes: list[tuple[int, int]]):
        super().__init__()
        self.image_sizes, self.orig_sizes = image_sizes, orig_sizes

    def forward(self, images, targets=None):
        return ImageList(torch.stack(images), self.image_sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        return [{**r, "boxes": resize_boxes(r["boxes"], size, orig)}
                for r, size, orig in zip(result, self.image_sizes, self.orig_sizes)]


BOTH = pytest.mark.parametrize("model_pair", ["v1", "v2"], indirect=True)


@pytest.fixture(scope="module")
def model_pair(request, tmp_path_factory):
    """(version, config, torchvision model, od2 model loaded from the torchvision file, that file)."""
    version = request.param
    reference = random_torchvision_retinanet(version)
    path = tmp_path_factory.mktemp(f"torchvision_{version}") / weights_file_name(version)
    torch.save(reference.state_dict(), path)
    cfg = load_config(str(CONFIGS / f"RetinaNet-R50-FPN-{version}.yaml"), ["MODEL.WEIGHTS="])
    model = build_model(cfg, 80).eval()
    checkpoint = load_checkpoint(path)
    model.load_state_dict(checkpoint["model"], strict=True)  # every tensor mapped, none left over
    return version, cfg, reference, model, path


@pytest.fixture(scope="module")
def synthetic_image(tmp_path_factory) -> Path:
    """A 301 x 457 RGB image (odd sides): gradients, two rectangles and seeded noise. Without the noise, flat regions
    give random weights identical scores at boxes one stride apart, whose IoU can be exactly NMS's 0.5, where float
    noise decides which box stays."""
    y, x = np.mgrid[0:301, 0:457]
    image = np.stack([(x * 0.5) % 255, (y * 0.8) % 255, ((x + y) * 0.3) % 255], axis=-1)
    image[50:150, 100:250] = (220, 40, 40)
    image[180:280, 300:420] = (30, 200, 60)
    image = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape), 0, 255)
    path = tmp_path_factory.mktemp("images") / "synthetic.png"
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def compare_detections(model_pair, files: list[Path], min_size: int) -> list[dict]:
    """Run both models on ``files`` through od2's test pipeline at ``min_size``; per image the agreement figures."""
    _, cfg, reference, model, _ = model_pair
    dataset = ImageFiles(files, resize_for_test(min_size, cfg.INPUT.MAX_SIZE_TEST), keep_original=False)
    batch = collate_batch([dataset[i] for i in range(len(dataset))], cfg.INPUT.SIZE_DIVISIBILITY)
    sizes = [tuple(s) for s in batch["image_sizes"].tolist()]
    origs = [tuple(s) for s in batch["orig_sizes"].tolist()]
    reference.transform = CanvasTransform(sizes, origs)
    with torch.no_grad():
        ours = model(batch["images"], batch["image_sizes"])
        theirs = reference(list(model.normalize(batch["images"]).contiguous()))
    figures = []
    for file, mine, their, size, orig in zip(files, ours, theirs, sizes, origs):
        scale = torch.tensor([orig[1] / size[1], orig[0] / size[0]] * 2)
        figures.append(match(mine["boxes"] * scale, mine["scores"], torch.tensor(COCO_CATEGORY_IDS)[mine["labels"]],
                             their["boxes"], their["scores"], their["labels"]))
        figures[-1].update(image=file.name, size=f"{orig[0]}x{orig[1]} -> {size[0]}x{size[1]}")
    print(*figures, sep="\n")
    return figures


def match(boxes, scores, labels, ref_boxes, ref_scores, ref_labels) -> dict:
    """Pair each detection with the reference's of the same label whose box is within BOX_TOL (after NMS no two
    detections of one label share a box, so the pair is unique); the largest differences of the pairs, and the
    unpaired detections of either side.

    An unpaired detection is allowed only at the cut to the 300 best: two candidates whose scores differ by float
    noise (~1e-6) can swap across it, so each side keeps one the other drops. Anywhere else it fails the test.
    """
    used = torch.zeros(len(ref_scores), dtype=torch.bool)
    box_diff, score_diff, unpaired = 0.0, 0.0, []
    for box, score, label in zip(boxes, scores, labels):
        distance = (ref_boxes - box).abs().max(dim=1).values
        candidates = (~used & (ref_labels == label) & (distance <= BOX_TOL)).nonzero().flatten()
        if not len(candidates):
            unpaired.append(score.item())
            continue
        best = candidates[distance[candidates].argmin()]
        used[best] = True
        box_diff = max(box_diff, distance[best].item())
        score_diff = max(score_diff, (ref_scores[best] - score).abs().item())
    unpaired += ref_scores[~used].tolist()
    return {"detections": len(scores), "reference": len(ref_scores), "paired": int(used.sum()),
            "max_box_diff": box_diff, "max_score_diff": score_diff, "unpaired_scores": unpaired,
            "lowest_score": min(scores.min().item(), ref_scores.min().item()) if len(scores) else None}


def assert_same_detections(figures: list[dict], max_detections: int = 300) -> None:
    for fig in figures:
        assert fig["paired"] > 10, fig  # a comparison of nothing would pass
        assert fig["max_box_diff"] <= BOX_TOL and fig["max_score_diff"] <= SCORE_TOL, fig
        if fig["unpaired_scores"]:  # only near-ties at the cut of a full list
            assert fig["detections"] == fig["reference"] == max_detections, fig
            assert all(abs(score - fig["lowest_score"]) <= SCORE_TOL for score in fig["unpaired_scores"]), fig
        else:
            assert fig["detections"] == fig["reference"] == fig["paired"], fig


# v1 differs from v2 only in parts with tests of their own (FPN, anchors, eps), so the quick suite runs v2 alone
@pytest.mark.parametrize("model_pair", [pytest.param("v1", marks=pytest.mark.slow), "v2"], indirect=True)
def test_same_detections_as_torchvision_small_synthetic(model_pair, synthetic_image):
    assert_same_detections(compare_detections(model_pair, [synthetic_image], min_size=128))


@pytest.mark.slow
@BOTH
@pytest.mark.parametrize("min_size", [480, 800])
def test_same_detections_as_torchvision_bccd(model_pair, bccd_datasets_root, synthetic_image, min_size):
    """Real photographs (BCCD, 640 x 480) and the synthetic image at the configs' test size (800) and below."""
    files = sorted((bccd_datasets_root / "bccd" / "JPEGImages").glob("*.jpg"))[:2] + [synthetic_image]
    assert_same_detections(compare_detections(model_pair, files, min_size))


@BOTH
def test_weights_by_name_from_the_hub_cache(model_pair, tmp_path, monkeypatch):
    """``torchvision://RetinaNet_ResNet50_FPN(_V2)_Weights.COCO_V1`` finds the file pre-placed where torch's hub
    cache keeps it and gives the same od2 checkpoint as the file by path."""
    pytest.importorskip("od2.utils.weight_files", reason="the weight-name resolver (issue 17 section 1) is not here")
    version, _, _, _, path = model_pair
    enum = VERSIONS[version][1]
    cached = tmp_path / "hub" / "checkpoints" / weights_file_name(version)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    by_name = load_checkpoint(f"torchvision://{type(enum).__name__}.{enum.name}")
    by_path = load_checkpoint(path)
    assert by_name["class_names"] == list(COCO_CLASS_NAMES) and by_name["category_ids"] == list(COCO_CATEGORY_IDS)
    assert by_name["model"].keys() == by_path["model"].keys()
    assert all(torch.equal(by_name["model"][key], by_path["model"][key]) for key in by_path["model"])


@BOTH
def test_coco_predictor_rows_and_shared_norms(model_pair):
    """The 91-slot predictor keeps, per anchor, the rows of COCO's 80 category ids in id order; a shared head norm
    becomes one copy per level."""
    version, _, reference, _, path = model_pair
    state = reference.state_dict()
    converted = load_checkpoint(path)["model"]
    weight = state["head.classification_head.cls_logits.weight"]
    for anchor in (0, 8):
        for label in (0, 11, 79):
            assert torch.equal(converted["head.cls_score.weight"][anchor * 80 + label],
                               weight[anchor * 91 + COCO_CATEGORY_IDS[label]])
    if version == "v2":
        for level in range(5):
            assert torch.equal(converted[f"head.box_tower.norm_acts.2.{level}.norm.weight"],
                               state["head.regression_head.conv.2.1.weight"])


@BOTH
def test_v1_file_eps_is_folded_into_the_variances(model_pair):
    """torchvision runs the v1 COCO file's FrozenBN with eps 0; od2's has eps 1e-5, so the variances shrink by it."""
    version, _, reference, _, path = model_pair
    variance = reference.state_dict()["backbone.body.bn1.running_var"]
    expected_shift = -1e-5 if version == "v1" else 0.0
    torch.testing.assert_close(load_checkpoint(path)["model"]["backbone.bn1.running_var"], variance + expected_shift,
                               rtol=0, atol=1e-7)


@BOTH
def test_a_key_without_a_place_is_named(model_pair):
    _, _, reference, _, _ = model_pair
    state = dict(reference.state_dict(), **{"head.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="'head.extra.weight'"):
        convert_torchvision_retinanet(state)


@pytest.mark.slow
@BOTH
def test_predict_json_uses_the_checkpoint_category_ids(model_pair, synthetic_image, tmp_path):
    """``od2 predict`` with the torchvision file and no annotation file: COCO names and COCO category ids."""
    from od2.cli import main

    version, _, _, _, path = model_pair
    out = tmp_path / "predict"
    main(["predict", "--config", str(CONFIGS / f"RetinaNet-R50-FPN-{version}.yaml"), "--weights", str(path),
          "--out", str(out), "--score-thresh", "0.05", "--no-draw", str(synthetic_image),
          "INPUT.MIN_SIZE_TEST=160"])
    detections = json.loads((out / "detections.json").read_text())
    categories = json.loads((out / "images.json").read_text())["categories"]
    assert detections and {d["category_id"] for d in detections} <= set(COCO_CATEGORY_IDS)
    assert categories == [{"id": cid, "name": name} for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]


@pytest.mark.parametrize("model_pair", ["v2"], indirect=True)
def test_fine_tuning_start_loads_everything_but_the_class_predictor(model_pair):
    """MODEL.WEIGHTS = the torchvision file on a 3-class model: every tensor loads except the 80-class predictor."""
    version, cfg, _, _, path = model_pair
    model = build_model(load_config(str(CONFIGS / f"RetinaNet-R50-FPN-{version}.yaml"),
                                    ["MODEL.WEIGHTS=", "MODEL.RETINANET.NUM_CLASSES=3"]), 3)
    reports = load_initial_weights(model, str(path))
    assert set(reports) == {"backbone", "neck", "head"}
    predictor = ["cls_score.bias", "cls_score.weight"]  # skipped for their shape, so they keep their initialisation
    for part, report in reports.items():
        expected = predictor if part == "head" else []
        assert sorted(report.missing) == expected and not report.unexpected, (part, report)
        assert sorted(k.split(":")[0] for k in report.mismatched) == expected, (part, report)
    assert len(reports["backbone"].loaded) == len(model.backbone.state_dict())
    state = load_checkpoint(path)["model"]
    assert torch.equal(model.head.bbox_pred.weight, state["head.bbox_pred.weight"])
    assert model.head.cls_score.weight.shape[0] == 9 * 3


@pytest.mark.slow
@pytest.mark.parametrize("model_pair", ["v2"], indirect=True)
def test_fine_tuning_trains_a_few_steps(model_pair, tmp_path):
    """``od2 train``'s Trainer from the torchvision file on a 10-class set: steps run with finite losses, and the
    checkpoint has a 10-class predictor."""
    version, _, _, _, path = model_pair
    paths = ensure_digits(tmp_path / "data", num_train=8, num_val=4, seed=3)
    try:
        register_coco_instances("tv_finetune_digits", paths["train"].json_file, paths["train"].image_root)
    except ValueError:  # registered by an earlier run in the same session
        pass
    cfg = load_config(str(CONFIGS / f"RetinaNet-R50-FPN-{version}.yaml"), [
        f"MODEL.WEIGHTS={path}", "MODEL.RETINANET.NUM_CLASSES=0", "MODEL.DEVICE=cpu",
        "DATASETS.TRAIN=[tv_finetune_digits]", "DATASETS.TEST=[]", "INPUT.MIN_SIZE_TRAIN=[128]",
        "INPUT.MAX_SIZE_TRAIN=160", "SOLVER.IMS_PER_BATCH=2", "SOLVER.MAX_ITER=2", "SOLVER.WARMUP_ITERS=1",
        "SOLVER.STEPS=[]", "TEST.EVAL_PERIOD=0", "DATALOADER.NUM_WORKERS=0", "LOG_PERIOD=1",
        f"OUTPUT_DIR={tmp_path / 'run'}"])
    Trainer(cfg).train()
    losses = [json.loads(line)["total_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "total_loss" in line]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert load_checkpoint(tmp_path / "run" / "model_final.pth")["model"]["head.cls_score.bias"].shape == (9 * 10,)

"""Stitcher (Chen et al. 2020) in training: the small-object loss share, the feedback switch to 2x2 mosaic batches,
exact resume with the feed's state, and the original's Stitch (INPUT.STITCH) in a real training run."""

from __future__ import annotations

import pytest
import torch
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)
from torchvision.ops import generalized_box_iou_loss

from od2.engine.checkpoint import load_checkpoint
from od2.engine.trainer import NonFiniteLossError, Trainer
from od2.modeling.build import build_model

pytestmark = pytest.mark.usefixtures("digits_root")

STITCHER = ["INPUT.STITCHER.ENABLED=true", "SOLVER.IMS_PER_BATCH=4"]


def test_small_box_loss_share_is_the_share_of_box_loss_from_small_ground_truth(tmp_path):
    cfg = tiny_cfg(tmp_path, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou")
    model = build_model(cfg, num_classes=10)
    model.small_box_area = 400.0
    gt = torch.tensor([[10.0, 10.0, 25.0, 25.0],  # area 225: small
                       [30.0, 30.0, 90.0, 80.0]])  # area 3000: not small
    per_box = generalized_box_iou_loss(gt + torch.tensor([1.0, 2.0, 3.0, -1.0]), gt, reduction="none")
    per_box = torch.cat([per_box, per_box[1:].repeat(3)])  # one small, four large anchors
    gts = torch.cat([gt, gt[1:].repeat(3, 1)])
    expected = per_box[0] / per_box.sum()
    assert torch.allclose(model.small_box_loss_share(per_box, gts), expected)
    assert model.small_box_loss_share(torch.zeros(0), torch.zeros(0, 4)) == 0

    images = torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8)
    model.train()
    losses = model(images, torch.tensor([[128, 128]]), {"boxes": [gt], "labels": [torch.tensor([1, 2])]})
    assert 0 < float(losses["small_box_loss_share"]) < 1
    assert not losses["small_box_loss_share"].requires_grad
    model.small_box_area = 0.0
    assert "small_box_loss_share" not in model(images, torch.tensor([[128, 128]]),
                                               {"boxes": [gt], "labels": [torch.tensor([1, 2])]})


def test_build_model_gives_the_model_the_stitcher_small_area(tmp_path):
    on = build_model(tiny_cfg(tmp_path, *STITCHER, "INPUT.STITCHER.SMALL_AREA=400"), num_classes=10)
    off = build_model(tiny_cfg(tmp_path, "INPUT.STITCHER.SMALL_AREA=400"), num_classes=10)
    assert (on.small_box_area, off.small_box_area) == (400.0, 0.0)
    images, sizes = torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8), torch.tensor([[128, 128]])
    targets = {"boxes": [torch.tensor([[10.0, 10.0, 25.0, 25.0]])], "labels": [torch.tensor([1])]}
    assert "small_box_loss_share" in on.train()(images, sizes, targets)
    assert "small_box_loss_share" not in off.train()(images, sizes, targets)


@pytest.mark.parametrize("threshold,expect_mosaics", [(0.0, 0), (1.01, 3)])
def test_threshold_decides_the_next_batch(tmp_path, threshold, expect_mosaics):
    # Share < 0 never holds; share < 1.01 always holds, so every batch after the first is a mosaic batch.
    cfg = tiny_cfg(tmp_path, *STITCHER, f"INPUT.STITCHER.THRESHOLD={threshold}", "SOLVER.MAX_ITER=4")
    trainer = Trainer(cfg)
    seen = []
    original_step = trainer.step

    def recording_step(iteration, batch):
        seen.append(batch["images"].shape)
        return original_step(iteration, batch)

    trainer.step = recording_step
    trainer.train()
    assert trainer.feed.mosaic_batches == expect_mosaics
    assert trainer.feed.regular_batches == 4 - expect_mosaics
    assert all(shape[0] == 4 for shape in seen)  # mosaic batches hold IMS_PER_BATCH images too
    metrics = [m for m in read_metrics(tmp_path) if "total_loss" in m]
    assert all(0 <= m["small_box_loss_share"] <= 1 for m in metrics)
    assert metrics[-1]["mosaic_batches"] == expect_mosaics


def test_resume_with_stitcher_replays_the_same_batches(tmp_path):
    common = [*STITCHER, "INPUT.STITCHER.THRESHOLD=0.5", "SOLVER.MAX_ITER=6"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(tiny_cfg(straight, *common)).train()
    Trainer(tiny_cfg(split, *common, "SOLVER.CHECKPOINT_PERIOD=3")).train()
    (split / "model_final.pth").unlink()
    (split / "last_checkpoint").write_text("model_0000003.pth")
    state = load_checkpoint(split / "model_0000003.pth")
    assert {"feed_regular_batches", "feed_mosaic_batches", "feed_mosaic_next"} <= set(state)
    Trainer(tiny_cfg(split, *common)).train(resume=True)
    a, b = load_checkpoint(straight / "model_final.pth"), load_checkpoint(split / "model_final.pth")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert (a["feed_regular_batches"], a["feed_mosaic_batches"]) == (b["feed_regular_batches"],
                                                                     b["feed_mosaic_batches"])
    assert a["feed_mosaic_batches"] > state["feed_mosaic_batches"] > 0  # both kinds before and after the resume
    assert a["feed_regular_batches"] > state["feed_regular_batches"] > 0


def test_training_with_stitch_trains(tmp_path):
    cfg = tiny_cfg(tmp_path, "INPUT.STITCH=1.0", "SOLVER.MAX_ITER=3")
    Trainer(cfg).train()
    losses = [m["total_loss"] for m in read_metrics(tmp_path) if "total_loss" in m]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_resume_from_the_nonfinite_checkpoint_replays_the_failed_batch(tmp_path, monkeypatch):
    common = [*STITCHER, "INPUT.STITCHER.THRESHOLD=0.5", "SOLVER.MAX_ITER=5"]
    straight, failed = tmp_path / "straight", tmp_path / "failed"
    Trainer(tiny_cfg(straight, *common)).train()
    trainer = Trainer(tiny_cfg(failed, *common))
    real_forward, calls = trainer.model.forward, {"n": 0}

    def forward_that_explodes(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # iteration 3, a mosaic batch at threshold 0.5 (batches alternate R M R M R)
            out["loss_cls"] = out["loss_cls"] * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "forward", forward_that_explodes)
    with pytest.raises(NonFiniteLossError):
        trainer.train()
    saved = load_checkpoint(failed / "model_nonfinite_0000003.pth")
    assert saved["iteration"] == 3
    # the state before iteration 3 took its batch: 2 regular + 1 mosaic batch, a mosaic batch next
    assert (saved["feed_regular_batches"], saved["feed_mosaic_batches"], saved["feed_mosaic_next"]) == (2, 1, True)
    (failed / "last_checkpoint").write_text("model_nonfinite_0000003.pth")
    Trainer(tiny_cfg(failed, *common)).train(resume=True)
    a, b = load_checkpoint(straight / "model_final.pth"), load_checkpoint(failed / "model_final.pth")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)

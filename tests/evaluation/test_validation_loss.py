"""Validation losses from the evaluation's forward: the mean of the per-image training losses in eval mode, the
same detections, and nothing of training's state touched (norm statistics, random numbers)."""

from __future__ import annotations

import torch

from od2.config import load_config
from od2.evaluation.inference import run_inference
from od2.evaluation.pipeline import InferencePipeline
from od2.models import retinanet


def tiny_model() -> torch.nn.Module:
    # trainable BN in the backbone: its running statistics would move if the losses ran in training mode
    return retinanet("resnet18", "fpn", num_classes=3, backbone_norm="BN", norm="GN", num_convs=1)


def batches(num: int = 3) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(num):
        boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]][: i + 1])  # 1, 2, 2 boxes
        out.append({"images": torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=generator),
                    "image_sizes": torch.tensor([[64, 64]]), "orig_sizes": torch.tensor([[64, 64]]),
                    "boxes": [boxes], "labels": [torch.tensor([0, 2][: i + 1])], "image_ids": [i + 1]})
    return out


def test_validation_losses_are_the_mean_of_the_per_image_training_losses():
    torch.manual_seed(0)
    model = tiny_model()
    data = batches()
    model.eval()
    with torch.no_grad():
        expected = [model(b["images"], b["image_sizes"], {"boxes": b["boxes"], "labels": b["labels"]}) for b in data]
    model.train()
    bn_before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    pipeline = InferencePipeline(load_config(None, ["MODEL.DEVICE=cpu"]), model, ["a", "b", "c"])
    with_losses = run_inference(pipeline, data, progress=False, losses=True)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(bn_before[k], v) for k, v in model.state_dict().items())  # running stats unchanged
    assert model.training  # given back in the mode it came in
    for key in ("loss_cls", "loss_box_reg"):
        mean = sum(float(e[key]) for e in expected) / len(expected)
        assert abs(with_losses.losses[key] - mean) < 1e-6 * max(1.0, mean), key
    total = sum(float(e["loss_cls"] + e["loss_box_reg"]) for e in expected) / len(expected)
    assert abs(with_losses.losses["total_loss"] - total) < 1e-6 * max(1.0, total)
    without = run_inference(pipeline, data, progress=False)
    assert without.losses == {}
    assert with_losses.detections == without.detections and with_losses.num_images == without.num_images == 3

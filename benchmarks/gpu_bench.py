"""GPU speed (benchmarks/gpu.sh): od2's RetinaNet-R50-FPN against torchvision's retinanet_resnet50_fpn built to the
same settings as `od2 bench` (od2/benchmark/retinanet_pair.py: FrozenBN, stem+res2 frozen, 80 classes, the same
anchors, 576x768 input), and od2's EfficientDet-D0 (configs/coco/EfficientDet-D0.yaml, input padded to 640x768):
training images/s in fp32 and with bf16 autocast, and inference seconds per image at batch 1. Prints a Markdown
table. Needs one CUDA GPU (``--device cpu`` runs it as a dry run).

    python benchmarks/gpu_bench.py [--iters 20] [--batch 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision

from od2.benchmark.retinanet_pair import LONG_SIDE, NUM_CLASSES, SHORT_SIDE, random_batch, retinanet_pair
from od2.benchmark.timing import median_seconds
from od2.config import load_config
from od2.modeling.build import build_model

EFFICIENTDET_D0 = Path(__file__).resolve().parents[1] / "configs" / "coco" / "EfficientDet-D0.yaml"


def train_images_per_second(model, losses, batch: int, iters: int, amp: bool, sync) -> float:
    """Images/s of SGD steps with global-norm clipping; ``losses(model)`` returns the loss dict."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    model.train()
    device_type = next(model.parameters()).device.type

    def step():
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            total = sum(losses(model).values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 32.0)
        optimizer.step()

    return batch / median_seconds(step, iters, warmup=5, sync=sync)


@torch.inference_mode()
def inference_seconds(model, forward, iters: int, sync) -> float:
    model.eval()
    return median_seconds(forward, iters, warmup=5, sync=sync)


def retinanet_rows(images, sizes, od2_targets, floats, tv_targets, iters: int, sync) -> list[tuple]:
    """(measure, od2, torchvision) rows of the RetinaNet-R50-FPN pair."""
    batch, device = len(images), images.device
    ours, theirs = (m.to(device) for m in retinanet_pair("FrozenBN"))
    rows = []
    for amp in (False, True):
        precision = "bf16 autocast" if amp else "fp32"
        rows.append((f"RetinaNet-R50-FPN train images/s, batch {batch}, {precision}",
                     train_images_per_second(ours, lambda m: m(images, sizes, od2_targets), batch, iters, amp, sync),
                     train_images_per_second(theirs, lambda m: m(floats, tv_targets), batch, iters, amp, sync)))
    rows.append(("RetinaNet-R50-FPN inference s/img, batch 1, fp32",
                 inference_seconds(ours, lambda: ours(images[:1], sizes[:1]), iters, sync),
                 inference_seconds(theirs, lambda: theirs(floats[:1]), iters, sync)))
    return rows


def efficientdet_rows(images, sizes, od2_targets, iters: int, sync) -> list[tuple]:
    """(measure, od2, None) rows of od2's EfficientDet-D0; its input is padded to INPUT.SIZE_DIVISIBILITY."""
    batch, device = len(images), images.device
    cfg = load_config(EFFICIENTDET_D0)
    d0 = build_model(cfg, NUM_CLASSES).to(device)
    divisor = cfg.INPUT.SIZE_DIVISIBILITY
    canvas = torch.zeros(batch, 3, -(-SHORT_SIDE // divisor) * divisor, -(-LONG_SIDE // divisor) * divisor,
                         dtype=torch.uint8, device=device)
    canvas[:, :, :SHORT_SIDE, :LONG_SIDE] = images
    rows = []
    for amp in (False, True):
        precision = "bf16 autocast" if amp else "fp32"
        rows.append((f"EfficientDet-D0 train images/s, batch {batch}, {precision}",
                     train_images_per_second(d0, lambda m: m(canvas, sizes, od2_targets), batch, iters, amp, sync),
                     None))
    rows.append(("EfficientDet-D0 inference s/img, batch 1, fp32",
                 inference_seconds(d0, lambda: d0(canvas[:1], sizes[:1]), iters, sync), None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu for a dry run")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name} | torch {torch.__version__} | torchvision {torchvision.__version__}")
    batch = args.batch
    images, boxes, labels = random_batch(batch)
    images = images.to(device)
    boxes, labels = [b.to(device) for b in boxes], [lab.to(device) for lab in labels]
    sizes = torch.tensor([[SHORT_SIDE, LONG_SIDE]] * batch, device=device)
    floats = [image.float() / 255 for image in images]
    tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    od2_targets = {"boxes": boxes, "labels": labels}

    rows = retinanet_rows(images, sizes, od2_targets, floats, tv_targets, args.iters, sync)
    rows += efficientdet_rows(images, sizes, od2_targets, args.iters, sync)

    print(f"\n{SHORT_SIDE}x{LONG_SIDE} images, {NUM_CLASSES} classes, 8 random boxes each, median of {args.iters} "
          "after 5 warm-up")
    print("| measure | od2 | torchvision | od2 / torchvision |\n|---|---|---|---|")
    for measure, mine, reference in rows:
        ratio = "" if reference is None else f"{mine / reference:.2f}"
        print(f"| {measure} | {mine:.4g} | {'' if reference is None else f'{reference:.4g}'} | {ratio} |")
    if device.type == "cuda":
        print(f"max memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()

"""CPU speed of the digits demo model (`make bench`): training step and batch-1 inference, NCHW vs
channels_last, measured back to back in one process so the ratios hold on a shared machine.

    python benchmarks/cpu_speed.py [--iters 4] [--batch 16] [--size 256] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from od2.benchmark.timing import median_seconds
from od2.config import load_config
from od2.modeling.build import build_model

CONFIG = "configs/digits/retinanet_lite0.yaml"


def measure(channels_last: bool, args: argparse.Namespace) -> tuple[float, float]:
    cfg = load_config(CONFIG, [f"MODEL.CHANNELS_LAST={str(channels_last).lower()}"])
    model = build_model(cfg, 10)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    sizes = torch.tensor([[args.size, args.size]] * args.batch)
    boxes = [torch.tensor([[10.0, 10, 50, 60], [100, 100, 160, 150], [30, 140, 60, 200]])] * args.batch
    labels = [torch.tensor([1, 2, 3])] * args.batch

    def train_step():
        losses = model(images, sizes, {"boxes": boxes, "labels": labels})
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    model.train()
    train_s = median_seconds(train_step, args.iters)
    model.eval()
    with torch.no_grad():
        infer_s = median_seconds(lambda: model(images[:1], sizes[:1]), args.iters * 4)
    return train_s, infer_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{CONFIG}: {args.batch} images of {args.size}x{args.size}, {args.threads} threads, median of {args.iters}")
    rows = {layout: measure(layout == "channels_last", args) for layout in ("NCHW", "channels_last")}
    print("| layout | train s/iteration | inference s/image (batch 1) |\n|---|---|---|")
    for layout, (train_s, infer_s) in rows.items():
        print(f"| {layout} | {train_s:.3f} | {infer_s:.4f} |")
    base = rows["NCHW"]
    print(f"channels_last speed-up: training {base[0] / rows['channels_last'][0]:.2f}x, "
          f"inference {base[1] / rows['channels_last'][1]:.2f}x")


if __name__ == "__main__":
    main()

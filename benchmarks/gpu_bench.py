"""GPU speed of od2's RetinaNet-R50-FPN against torchvision's retinanet_resnet50_fpn (random weights, same
classes, anchors per cell and input size): training images/s (fp32 and bf16 autocast) and inference seconds
per image at short side 576, batch 1. Prints a Markdown table. Needs one CUDA GPU.

    python benchmarks/gpu_bench.py [--iters 20] [--batch 8]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torchvision.models.detection import retinanet_resnet50_fpn

from od2.benchmark.timing import median_seconds
from od2.config import load_config
from od2.modeling.build import build_model

HEIGHT, WIDTH = 576, 768  # a 4:3 COCO image at the log's test size
NUM_CLASSES = 80
DEVICE = torch.device("cuda")


def random_targets(batch: int, device: torch.device, num_boxes: int = 8) -> tuple[list, list]:
    g = torch.Generator().manual_seed(0)
    boxes, labels = [], []
    for _ in range(batch):
        xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([WIDTH - 120, HEIGHT - 120])
        wh = 16 + torch.rand(num_boxes, 2, generator=g) * 100
        boxes.append(torch.cat([xy, xy + wh], 1).to(device))
        labels.append(torch.randint(0, NUM_CLASSES, (num_boxes,), generator=g).to(device))
    return boxes, labels


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def od2_model(device: torch.device) -> torch.nn.Module:
    cfg = load_config("configs/Base-RetinaNet.yaml", ["MODEL.FPN.NORM=GN", "MODEL.RETINANET.NORM=GN"])
    return build_model(cfg, NUM_CLASSES).to(device)


def tv_model(device: torch.device) -> torch.nn.Module:
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                   min_size=HEIGHT, max_size=1333)
    return model.to(device)


def bench_train(model, step_inputs, iters: int, amp: bool) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    model.train()

    def step():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=amp):
            losses = step_inputs(model)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 32.0)
        opt.step()

    return median_seconds(step, iters, warmup=5, sync=_sync)


@torch.no_grad()
def bench_infer(model, infer, iters: int) -> float:
    model.eval()
    return median_seconds(infer, iters, warmup=5, sync=_sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu for a dry run")
    args = parser.parse_args()
    global DEVICE
    device = DEVICE = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name} | torch {torch.__version__} | torchvision {torchvision.__version__}")
    batch = args.batch
    uint8 = torch.randint(0, 255, (batch, 3, HEIGHT, WIDTH), dtype=torch.uint8, device=device)
    sizes = torch.tensor([[HEIGHT, WIDTH]] * batch, device=device)
    boxes, labels = random_targets(batch, device)
    floats = [img.float() / 255 for img in uint8]
    tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]

    rows = []
    od2_net, tv_net = od2_model(device), tv_model(device)
    for amp in (False, True):
        od2_s = bench_train(od2_net, lambda m: m(uint8, sizes, {"boxes": boxes, "labels": labels}), args.iters, amp)
        tv_s = bench_train(tv_net, lambda m: m(floats, tv_targets), args.iters, amp)
        name = "bf16 autocast" if amp else "fp32"
        rows.append((f"train images/s, batch {batch}, {name}", batch / od2_s, batch / tv_s))
    od2_inf = bench_infer(od2_net, lambda: od2_net(uint8[:1], sizes[:1]), args.iters)
    tv_inf = bench_infer(tv_net, lambda: tv_net(floats[:1]), args.iters)
    rows.append(("inference s/img, batch 1, fp32", od2_inf, tv_inf))
    print(f"\nRetinaNet-R50-FPN (GN neck+head for od2), {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, median of "
          f"{args.iters} after 5 warm-up")
    print("| measure | od2 | torchvision | od2 / torchvision |\n|---|---|---|---|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.4g} | {theirs:.4g} | {ours / theirs:.2f} |")
    if device.type == "cuda":
        print(f"max memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()

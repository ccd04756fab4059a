"""Per-architecture cost (`make bench`): parameters, FLOPs and CPU seconds per image of each log row's model at the
test size (short side 576, a 4:3 image, padded as the config pads), as ratios to the RetinaNet-R50-FPN row.

Models are timed round-robin (one forward each per round) so that load on a shared machine hits them alike.
``--train-size H W`` also times one training step (SGD, ``--train-batch`` images) per round, which is how
the BCCD EfficientDet-Lite0 vs RetinaNet-Lite0 comparison sets its equal CPU budget.

    python benchmarks/arch_speed.py [--rounds 5] [--threads 2] [--configs A.yaml B.yaml ...] [--train-size 480 640]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from od2.config import load_config
from od2.modeling.build import build_model
from od2.tools.model_info import model_info, resolve_input_size

REFERENCE = "configs/coco/RetinaNet-EvoNormS-GIoU.yaml"
CONFIGS = [
    REFERENCE,
    "configs/coco/RetinaNet-TwoWayFPN-EvoNormS-GIoU.yaml",
    "configs/coco/RetinaNet-PConv-EvoNormS-GIoU.yaml",
    "configs/coco/RetinaNet-MobileNetV3-EvoNormS-GIoU.yaml",
    "configs/coco/EfficientDet-D0.yaml",
    "configs/coco/EfficientDet-D0-R50.yaml",
    "configs/coco/EfficientDet-D0-official.yaml",
]


def fake_targets(batch: int, height: int, width: int) -> dict[str, list[torch.Tensor]]:
    """Three boxes per image (small, medium, large) so every level gets positives."""
    boxes = torch.tensor([[10.0, 10, 40, 44], [0.2 * width, 0.3 * height, 0.5 * width, 0.7 * height],
                          [0.1 * width, 0.1 * height, 0.95 * width, 0.9 * height]])
    return {"boxes": [boxes] * batch, "labels": [torch.tensor([0, 1, 2])] * batch}


class Subject:
    """One config's model with its inference (and optional training-step) closures."""

    def __init__(self, path: str, num_classes: int, train_size: tuple[int, int] | None, train_batch: int):
        self.path = path
        cfg = load_config(path)
        self.info = model_info(cfg, num_classes)
        self.model = build_model(cfg, num_classes).eval()
        height, width = self.info["input_size"]
        self.image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
        self.image_size = torch.tensor([[height, width]])
        self.infer_times: list[float] = []
        self.train_times: list[float] = []
        self.train_input = None
        if train_size:
            h, w = resolve_input_size(cfg, train_size)
            images = torch.randint(0, 256, (train_batch, 3, h, w), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(1))
            self.train_input = (images, torch.tensor([list(train_size)] * train_batch),
                                fake_targets(train_batch, *train_size))
            self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.image, self.image_size)

    def train_step(self) -> None:
        self.model.train()
        images, sizes, targets = self.train_input
        losses = self.model(images, sizes, targets)
        self.optimizer.zero_grad(set_to_none=True)
        sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
        self.optimizer.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="first one is the reference of the ratios")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-size", type=int, nargs=2, metavar=("H", "W"),
                        help="also time a training step on a batch of this image size")
    parser.add_argument("--train-batch", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    subjects = [Subject(p, args.num_classes, tuple(args.train_size) if args.train_size else None, args.train_batch)
                for p in args.configs]
    for subject in subjects:  # warm-up (allocator, oneDNN kernels)
        subject.infer()
        if subject.train_input:
            subject.train_step()
    for _ in range(args.rounds):
        for subject in subjects:
            subject.infer_times.append(timed(subject.infer))
            if subject.train_input:
                subject.train_times.append(timed(subject.train_step))

    print(f"{args.threads} threads, batch-1 inference, median of {args.rounds} round-robin rounds, "
          f"{args.num_classes} classes; ratios to {args.configs[0]}")
    header = "| config | input (padded) | params (M) | GFLOPs | s/img | params × | GFLOPs × | s/img × |"
    if args.train_size:
        header += f" train s/it (batch {args.train_batch}, {args.train_size[0]}x{args.train_size[1]}) | train × |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    ref = subjects[0]
    ref_infer = statistics.median(ref.infer_times)
    ref_train = statistics.median(ref.train_times) if ref.train_times else None
    for s in subjects:
        infer = statistics.median(s.infer_times)
        params, gflops = s.info["params"]["total"], s.info["gflops"]
        row = (f"| {s.path.split('/')[-1].removesuffix('.yaml')} | {s.info['input_size'][0]}x{s.info['input_size'][1]}"
               f" | {params / 1e6:.2f} | {gflops:.1f} | {infer:.3f} | {params / ref.info['params']['total']:.2f}"
               f" | {gflops / ref.info['gflops']:.2f} | {infer / ref_infer:.2f} |")
        if s.train_times:
            train = statistics.median(s.train_times)
            row += f" {train:.3f} | {train / ref_train:.2f} |"
        print(row)


if __name__ == "__main__":
    main()

"""Forward + backward time of the RetinaNet head per norm (`make bench`), as ratios to BN.

The log's head: 256 channels, 4 shared 3x3 convs per tower, one norm per level, on P3-P7 of a square image
(P3 = size/8 ... P7 = size/128). Every norm is timed back to back in one process so the ratios hold on a
shared machine. ``--compile MODE`` also times each head compiled as MODEL.COMPILE compiles it
(od2.engine.compile.compile_training_forward, inductor), the compile itself in the warm-up.

    python benchmarks/head_norms.py [--size 512] [--batch 2] [--iters 5] [--threads 2] [--device cuda] [--bf16]
                                    [--compile default]
"""

from __future__ import annotations

import argparse

import torch

from od2.benchmark.timing import median_seconds
from od2.engine.compile import compile_training_forward
from od2.modeling.retinanet_head import RetinaNetHead

NORMS = ("BN", "GN", "EvoNormS0", "SN", "SwitchNorm", "")
ACTIVATION = {"EvoNormS0": "NA"}  # EvoNorm-S0 is its own activation


def pyramid(size: int, batch: int, device: str) -> list[torch.Tensor]:
    """Random 256-channel P3-P7 features [batch, 256, ceil(size / 2^k), ceil(size / 2^k)], channels_last."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 256, -(-size // 2 ** k), -(-size // 2 ** k), generator=g)
            .to(device).contiguous(memory_format=torch.channels_last) for k in range(3, 8)]


def head_seconds(norm: str, features: list[torch.Tensor], iters: int, bf16: bool = False,
                 compile_mode: str = "", backend: str = "inductor") -> float:
    """Median seconds of one training step of the head (forward, a loss on every output, backward) with ``norm``;
    ``compile_mode`` (a torch.compile mode, "" = eager) compiles the head's forward with ``backend`` first (in the
    warm-up)."""
    torch.manual_seed(0)
    device = features[0].device
    head = RetinaNetHead(256, 9, 80, len(features), num_convs=4, norm=norm,
                         activation=ACTIVATION.get(norm, "relu")).train()
    head = head.to(device, memory_format=torch.channels_last)
    if compile_mode:
        compile_training_forward(head, compile_mode, backend)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, deltas = head(features)
        loss = sum(x.float().square().mean() for x in logits + deltas)
        head.zero_grad(set_to_none=True)
        loss.backward()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return median_seconds(step, iters, warmup=3 if compile_mode else 2, sync=sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image side; P3 is size/8")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward")
    parser.add_argument("--compile", default="", metavar="MODE",
                        help="also time every head compiled with this torch.compile mode (e.g. default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = pyramid(args.size, args.batch, args.device)
    print(f"RetinaNet head (256 ch, 4 convs, P3-P7) forward+backward, {args.batch} images of {args.size}x{args.size}, "
          f"{args.device}{' bf16 autocast' if args.bf16 else ''}, {args.threads} threads, median of {args.iters}")
    seconds = {norm: head_seconds(norm, features, args.iters, args.bf16) for norm in NORMS}
    if not args.compile:
        print("| head norm | s/iteration | vs BN |\n|---|---|---|")
        for norm, value in seconds.items():
            print(f"| {norm or 'none'} | {value:.3f} | {value / seconds['BN']:.2f} |")
        return
    compiled = {norm: head_seconds(norm, features, args.iters, args.bf16, args.compile) for norm in NORMS}
    print(f"compiled: torch.compile mode {args.compile!r}, inductor; 'vs BN': against eager BN\n"
          "| head norm | eager s/it | eager vs BN | compiled s/it | compiled vs BN | compiled vs compiled BN |\n"
          "|---|---|---|---|---|---|")
    for norm in NORMS:
        print(f"| {norm or 'none'} | {seconds[norm]:.3f} | {seconds[norm] / seconds['BN']:.2f} | {compiled[norm]:.3f} "
              f"| {compiled[norm] / seconds['BN']:.2f} | {compiled[norm] / compiled['BN']:.2f} |")


if __name__ == "__main__":
    main()

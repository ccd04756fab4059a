"""What the per-shape weight-gradient layout (od2.layers.cpu_conv) buys a RetinaNet-R50 training step on the CPU.

od2's training step with the tuning on and off, and torchvision's, take turns (the `od2 bench` models, 2 images
of 576x768); then, per convolution shape of the step, the weight gradient alone in NHWC and in NCHW (with the
copies into NCHW), as the tuning saw them, and the layout it kept.

    python benchmarks/conv_layouts.py [--bn BN|FrozenBN] [--iters 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import math

import torch

from od2.benchmark.model_speed import TRAIN_BATCH, sgd_step
from od2.benchmark.retinanet_pair import random_batch, retinanet_pair
from od2.benchmark.timing import interleaved_rounds
from od2.layers import cpu_conv
from od2.utils.cpu_heap import keep_freed_memory


def weight_grad_ms(key: tuple, layout: torch.memory_format, iters: int) -> float:
    """Best milliseconds of the weight (and bias) gradient of the conv shape ``key`` in ``layout``, from NHWC
    tensors (so the NCHW time includes the copies)."""
    x_shape, w_shape, stride, padding, dilation, with_bias, _ = key
    cl = torch.channels_last
    x = torch.randn(x_shape).contiguous(memory_format=cl)
    weight = torch.randn(w_shape).contiguous(memory_format=cl)
    grad = torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation).contiguous(memory_format=cl)
    bias_sizes = [w_shape[0]] if with_bias else None

    def run():
        torch.ops.aten.convolution_backward(
            grad.contiguous(memory_format=layout), x.contiguous(memory_format=layout),
            weight.contiguous(memory_format=layout), bias_sizes, stride, padding, dilation, False, [0, 0], 1,
            (False, True, with_bias))

    rounds = interleaved_rounds({"run": run}, iters)
    return rounds["run"].best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bn", choices=("BN", "FrozenBN"), default="BN", help="backbone norm (default BN)")
    parser.add_argument("--iters", type=int, default=6, help="timed rounds (default 6)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    keep_freed_memory()  # as od2 bench: no page-fault tax that depends on what ran before
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, theirs = (m.train() for m in retinanet_pair(args.bn))
    images, boxes, labels = random_batch(TRAIN_BATCH)
    sizes = torch.tensor([list(images.shape[-2:])] * TRAIN_BATCH)
    floats = [image.float() / 255 for image in images]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    od2_step = sgd_step(ours, lambda: ours(images, sizes, {"boxes": boxes, "labels": labels}))

    def with_tuning(enabled: bool):
        def step():
            previous = cpu_conv.set_weight_grad_tuning(enabled)
            try:
                od2_step()
            finally:
                cpu_conv.set_weight_grad_tuning(previous)
        return step

    steps = {"od2, tuned layouts": with_tuning(True), "od2, NHWC only": with_tuning(False),
             "torchvision": sgd_step(theirs, lambda: theirs(floats, targets))}
    print(f"training step ({args.bn}, {TRAIN_BATCH} images of {images.shape[-2]}x{images.shape[-1]}, "
          f"{torch.get_num_threads()} threads): {args.iters} rounds in turns")
    rounds = interleaved_rounds(steps, args.iters)
    reference = rounds["torchvision"].best
    print("| step | best s | median s | ÷ torchvision |\n|---|---|---|---|")
    for name, r in rounds.items():
        print(f"| {name} | {r.best:.3f} | {r.median:.3f} | {r.best / reference:.3f} |")

    print("\n| input | weight | stride | NHWC ms | NCHW ms (with copies) | kept |\n|---|---|---|---|---|---|")
    def multiply_adds(key: tuple) -> float:
        (batch, _, height, width), weight_shape, stride = key[:3]
        return batch * height * width / (stride[0] * stride[1]) * math.prod(weight_shape)

    for key, layout in sorted(cpu_conv.tuned_layouts().items(), key=lambda item: -multiply_adds(item[0])):
        nhwc, nchw = (weight_grad_ms(key, candidate, 3) for candidate in cpu_conv.LAYOUTS)
        kept = "NHWC" if layout == torch.channels_last else "NCHW"
        print(f"| {list(key[0])} | {list(key[1])} | {key[2][0]} | {nhwc:.1f} | {nchw:.1f} | {kept} |")


if __name__ == "__main__":
    main()

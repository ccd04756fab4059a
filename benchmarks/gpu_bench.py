"""Issue 21's GPU measurements in one run (benchmarks/gpu.sh): prints one table and writes the "GPU
(benchmarks/gpu.sh)" section of docs/benchmarks.md.

Steps (each prints its own elapsed time; ``--skip`` leaves any out for a rerun):

- ``retinanet``: od2's RetinaNet-R50-FPN against torchvision's retinanet_resnet50_fpn built to the `od2 bench`
  settings (od2/benchmark/retinanet_pair.py: FrozenBN, stem+res2 frozen, 80 classes, the same anchors, 576x768, 8
  random boxes per image): batch-1 inference s/img, batch-8 inference and training images/s in fp32 and bf16.
- ``compiled``: od2 batch-1 inference with TEST.COMPILE=reduce-overhead (n/a where od2 has no such key), and od2
  training in bf16 with MODEL.COMPILE=default, each against torchvision's eager figure.
- ``heads``: the log's RetinaNet head per norm (benchmarks/head_norms.py: 256 channels, 4 convs, P3-P7 of 640x640,
  batch 8) in fp32 and bf16 eager and in fp32 compiled as MODEL.COMPILE compiles it, each against eager BN.
- ``efficientdet``: EfficientDet-D0 as the paper builds it (configs/coco/EfficientDet-D0-official.yaml, trainable
  BN, 512x512, 80 classes) against effdet's ``tf_efficientdet_d0`` (random weights, nothing downloaded) when
  ``import effdet`` works, else against the published figures of the official code.

The speed columns say "od2 / reference" as a speed ratio: above 1 means od2 is faster (for times, reference time /
od2 time). ``--dry-run`` runs every step on the CPU with tiny sizes, one timed iteration and
the "eager" compile backend (dynamo's graph capture without code generation: an inductor or AOT compile of ResNet-50
takes minutes on a CPU), and writes the docs section to a temporary file.

    python benchmarks/gpu_bench.py [--dry-run] [--skip heads,compiled] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from head_norms import NORMS, head_seconds, pyramid

from od2.benchmark.retinanet_pair import NUM_CLASSES, od2_retinanet, random_batch, retinanet_pair
from od2.benchmark.suite import write_section
from od2.benchmark.timing import median_seconds
from od2.config import ConfigError, load_config, resolve_config
from od2.engine.compile import compile_for_training
from od2.modeling.build import build_model, convert_for_inference

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- gpu.sh: begin -->", "<!-- gpu.sh: end -->"
STEPS = ("retinanet", "compiled", "heads", "efficientdet")
EFFICIENTDET_D0 = resolve_config("coco/EfficientDet-D0-official.yaml")
# Issue 21's goals as speed ratios od2 / reference: batch-1 inference in at most 0.8x torchvision's time, batch-8
# inference and training at 1.3x its images/s, every head norm within 1.3x of BN's step time.
BATCH1_GOAL, THROUGHPUT_GOAL, HEAD_NORM_GOAL = 1 / 0.8, 1.3, 1 / 1.3
# The official code's end-to-end figures for D0 (preprocessing, network, NMS), Tesla V100 without TensorRT:
# google/automl efficientdet/README.md, "4. Benchmark model latency". No training throughput is published.
PUBLISHED_D0 = "google/automl README, V100, no TensorRT"
PUBLISHED_D0_BATCH1_SECONDS = 0.0102
PUBLISHED_D0_BATCH8_IMAGES_PER_S = 209.0


@dataclass(frozen=True)
class Settings:
    """Sizes and counts of one run; :func:`settings` gives the GPU run's and the dry run's."""

    device: torch.device
    height: int
    width: int
    batch: int
    iters: int
    warmup: int
    head_size: int
    head_batch: int
    d0_size: int
    compile_backend: str


def settings(dry_run: bool) -> Settings:
    if dry_run:  # the same code paths in seconds on a CPU (images must exceed the random boxes' 120 px)
        return Settings(torch.device("cpu"), 160, 192, 2, 1, 1, 64, 2, 128, "eager")
    # Sized from issue 6's H100 figures (about 0.08 s per RetinaNet training step of 8, 0.03-0.12 s per head step):
    # the timed loops take about 1 min, the compiles 3-5 min (estimated, see docs/benchmarks.md).
    return Settings(torch.device("cuda"), 576, 768, 8, 20, 5, 640, 8, 512, "inductor")


@dataclass(frozen=True)
class Row:
    """One line of the table. ``od2`` / ``reference``: None where not measured (n/a). ``goal``: the speed ratio
    issue 21 asks for at least; ``unit`` s/img, images/s or s/step."""

    measure: str
    unit: str
    od2: float | None
    reference: float | None
    reference_name: str
    goal: float | None = None

    @property
    def speed_ratio(self) -> float | None:
        if self.od2 is None or self.reference is None:
            return None
        return self.od2 / self.reference if self.unit == "images/s" else self.reference / self.od2

    def cells(self) -> list[str]:
        ratio = self.speed_ratio
        goal = "" if self.goal is None else f">= {self.goal:.2f}"
        if goal and ratio is not None:
            goal += ": met" if ratio >= self.goal else ": not met"
        return [self.measure, self.unit, number(self.od2), number(self.reference), self.reference_name,
                "n/a" if ratio is None else f"{ratio:.2f}", goal]


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def markdown_table(rows: list[Row]) -> str:
    header = ["measure", "unit", "od2", "reference", "reference is", "speed od2 / reference", "issue 21 goal"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row.cells()) + " |" for row in rows)])


@contextlib.contextmanager
def step(name: str, start: float) -> Iterator[None]:
    """Print the step's own seconds and the run's elapsed seconds when it ends."""
    began = time.perf_counter()
    print(f"[{name}] ...", flush=True)
    yield
    now = time.perf_counter()
    print(f"[{name}] {now - began:.1f} s (elapsed {now - start:.1f} s)", flush=True)


class Timer:
    """Median seconds of SGD steps and of inference calls at the run's iteration counts."""

    def __init__(self, s: Settings):
        self.s = s
        self.sync = torch.cuda.synchronize if s.device.type == "cuda" else None

    def train_step_seconds(self, model: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor],
                           bf16: bool) -> float:
        """Median seconds of one SGD step (momentum, global-norm clipping) of the total ``loss(model)``."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
        model.train()

        def sgd_step():
            with torch.autocast(self.s.device.type, dtype=torch.bfloat16, enabled=bf16):
                total = loss(model).float()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 32.0)
            optimizer.step()

        return median_seconds(sgd_step, self.s.iters, warmup=self.s.warmup, sync=self.sync)

    def inference_seconds(self, model: torch.nn.Module, forward: Callable[[], object], bf16: bool = False) -> float:
        model.eval()

        def infer():
            with torch.inference_mode(), torch.autocast(self.s.device.type, dtype=torch.bfloat16, enabled=bf16):
                forward()

        return median_seconds(infer, self.s.iters, warmup=self.s.warmup, sync=self.sync)


def od2_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of od2's loss dict: its ``loss_*`` entries (the trainer's sum)."""
    return sum(v for k, v in losses.items() if k.startswith("loss_"))


def retinanet_rows(s: Settings, timer: Timer, compiled: bool, plain: bool) -> list[Row]:
    """The RetinaNet-R50-FPN pair: eager rows (``plain``) and the TEST.COMPILE / MODEL.COMPILE rows (``compiled``)."""
    device, batch = s.device, s.batch
    images, boxes, labels = random_batch(batch, height=s.height, width=s.width)
    images, boxes, labels = images.to(device), [b.to(device) for b in boxes], [lab.to(device) for lab in labels]
    sizes = torch.tensor([[s.height, s.width]] * batch, device=device)
    floats = [image.float() / 255 for image in images]
    targets = {"boxes": boxes, "labels": labels}
    tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    ours, theirs = (m.to(device) for m in retinanet_pair("FrozenBN", short_side=s.height))
    name, tv = "RetinaNet-R50-FPN", "torchvision"

    def od2_train(bf16: bool) -> float:
        return batch / timer.train_step_seconds(ours, lambda m: od2_loss(m(images, sizes, targets)), bf16)

    def tv_train(bf16: bool) -> float:
        return batch / timer.train_step_seconds(theirs, lambda m: sum(m(floats, tv_targets).values()), bf16)

    tv_batch1 = timer.inference_seconds(theirs, lambda: theirs(floats[:1]))
    tv_train_bf16 = tv_train(True)
    rows = []
    if plain:
        rows.append(Row(f"{name} inference, batch 1, fp32", "s/img",
                        timer.inference_seconds(ours, lambda: ours(images[:1], sizes[:1])), tv_batch1, tv, BATCH1_GOAL))
        for bf16 in (False, True):
            rows.append(Row(f"{name} inference, batch {batch}, {'bf16' if bf16 else 'fp32'}", "images/s",
                            batch / timer.inference_seconds(ours, lambda: ours(images, sizes), bf16),
                            batch / timer.inference_seconds(theirs, lambda: theirs(floats), bf16), tv, THROUGHPUT_GOAL))
        for bf16 in (False, True):
            rows.append(Row(f"{name} training, batch {batch}, {'bf16' if bf16 else 'fp32'}", "images/s",
                            od2_train(bf16), tv_train_bf16 if bf16 else tv_train(False), tv, THROUGHPUT_GOAL))
    if compiled:
        rows.append(Row(f"{name} inference, batch 1, fp32, TEST.COMPILE=reduce-overhead", "s/img",
                        reduce_overhead_seconds(s, timer, ours, images, sizes), tv_batch1, tv, BATCH1_GOAL))
        compile_for_training(ours, "default", s.compile_backend)
        rows.append(Row(f"{name} training, batch {batch}, bf16, MODEL.COMPILE=default", "images/s",
                        od2_train(True), tv_train_bf16, tv, THROUGHPUT_GOAL))
    return rows


def reduce_overhead_seconds(s: Settings, timer: Timer, ours: torch.nn.Module, images: torch.Tensor,
                         sizes: torch.Tensor) -> float | None:
    """Batch-1 s/img of a copy of ``ours`` converted by ``convert_for_inference`` with TEST.COMPILE=reduce-overhead;
    None where od2 has no TEST.COMPILE key, and in the dry run (an inductor compile of ResNet-50 takes minutes on a
    CPU: the dry run only checks the key)."""
    try:
        cfg = load_config(None, ["TEST.COMPILE=reduce-overhead"])
    except ConfigError as error:
        print(f"TEST.COMPILE: n/a ({error})")
        return None
    if s.device.type == "cpu":
        print("TEST.COMPILE: the key exists; not timed in the dry run")
        return None
    model = od2_retinanet("FrozenBN").to(s.device)
    model.load_state_dict(ours.state_dict())
    model = convert_for_inference(model.eval(), cfg)
    return timer.inference_seconds(model, lambda: model(images[:1], sizes[:1]))


def head_rows(s: Settings) -> list[Row]:
    """Each head norm's training step against eager BN of the same precision: fp32 and bf16 eager, and fp32 compiled
    as MODEL.COMPILE compiles it (against eager fp32 BN: the goal is the norm's cost, however it is run)."""
    features = pyramid(s.head_size, s.head_batch, str(s.device))
    runs = {"fp32, eager": (False, ""), "bf16, eager": (True, ""), "fp32, compiled": (False, "default")}
    seconds = {label: {norm: head_seconds(norm, features, s.iters, bf16, mode, s.compile_backend)
                       for norm in NORMS if norm or not mode}  # "none" is not a norm to fuse
               for label, (bf16, mode) in runs.items()}
    rows = []
    for label, per_norm in seconds.items():
        bn = seconds[label.replace("compiled", "eager")]["BN"]
        rows += [Row(f"head {norm or 'no norm'} training step, {s.head_batch}x{s.head_size}^2, {label}", "s/step",
                     value, bn, "BN, eager", None if norm in ("BN", "") else HEAD_NORM_GOAL)
                 for norm, value in per_norm.items()]
    return rows


def efficientdet_rows(s: Settings, timer: Timer) -> list[Row]:
    """od2's paper D0 against effdet's tf_efficientdet_d0, or the published figures when effdet is absent."""
    device, batch, size = s.device, s.batch, s.d0_size
    images, boxes, labels = random_batch(batch, seed=1, height=size, width=size)
    images, boxes, labels = images.to(device), [b.to(device) for b in boxes], [lab.to(device) for lab in labels]
    sizes = torch.tensor([[size, size]] * batch, device=device)
    targets = {"boxes": boxes, "labels": labels}
    d0 = build_model(load_config(EFFICIENTDET_D0, ["MODEL.BACKBONE.NORM=BN"]), NUM_CLASSES).to(device)
    name = f"EfficientDet-D0 (paper config), {size}x{size}"
    od2_train = {bf16: batch / timer.train_step_seconds(d0, lambda m: od2_loss(m(images, sizes, targets)), bf16)
                 for bf16 in (False, True)}
    od2_batch1 = timer.inference_seconds(d0, lambda: d0(images[:1], sizes[:1]))
    od2_batch8 = batch / timer.inference_seconds(d0, lambda: d0(images, sizes))
    reference = effdet_figures(s, timer, images, boxes, labels)
    if reference is None:
        print("effdet is not importable here: EfficientDet-D0 stands beside the published figures "
              f"({PUBLISHED_D0}); no training figure is published")
        reference = {"name": PUBLISHED_D0, "train": {False: None, True: None},
                     "batch1": PUBLISHED_D0_BATCH1_SECONDS, "batch8": PUBLISHED_D0_BATCH8_IMAGES_PER_S}
    rows = [Row(f"{name} training, batch {batch}, {'bf16' if bf16 else 'fp32'}", "images/s", od2_train[bf16],
                reference["train"][bf16], reference["name"]) for bf16 in (False, True)]
    rows.append(Row(f"{name} inference, batch 1, fp32", "s/img", od2_batch1, reference["batch1"], reference["name"]))
    rows.append(Row(f"{name} inference, batch {batch}, fp32", "images/s", od2_batch8, reference["batch8"],
                    reference["name"]))
    return rows


def effdet_figures(s: Settings, timer: Timer, images: torch.Tensor, boxes: list[torch.Tensor],
                   labels: list[torch.Tensor]) -> dict | None:
    """effdet's tf_efficientdet_d0 (random weights, 80 classes) on the same batch; None without effdet."""
    try:
        from effdet import DetBenchPredict, create_model
    except ImportError:
        return None
    batch = len(images)
    # bench_labeler: anchor matching inside the training step, on the device, as od2's (effdet's own training
    # script matches in its loader instead)
    bench = create_model("tf_efficientdet_d0", bench_task="train", num_classes=NUM_CLASSES, pretrained=False,
                         pretrained_backbone=False, image_size=(s.d0_size, s.d0_size), bench_labeler=True).to(s.device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=s.device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=s.device).view(1, 3, 1, 1) * 255
    floats = (images.float() - mean) / std
    # effdet's targets: boxes as (y0, x0, y1, x1), classes 1..K
    target = {"bbox": torch.stack([b[:, [1, 0, 3, 2]] for b in boxes]), "cls": torch.stack(labels).float() + 1}
    train = {bf16: batch / timer.train_step_seconds(bench, lambda m: m(floats, target)["loss"], bf16)
             for bf16 in (False, True)}
    predict = DetBenchPredict(copy.deepcopy(bench.model)).to(s.device)
    return {"name": "effdet tf_efficientdet_d0", "train": train,
            "batch1": timer.inference_seconds(predict, lambda: predict(floats[:1])),
            "batch8": batch / timer.inference_seconds(predict, lambda: predict(floats))}


def machine(device: torch.device) -> tuple[str, str]:
    """(card name, driver version); the CPU and "n/a" in the dry run."""
    if device.type != "cuda":
        return "CPU (dry run)", "n/a"
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        driver = "unknown"
    return torch.cuda.get_device_name(device), driver


def docs_section(rows: list[Row], s: Settings, card: str, driver: str, seconds: float) -> str:
    today = datetime.date.today().isoformat()
    return "\n".join([
        BEGIN,
        "## GPU (benchmarks/gpu.sh)",
        "",
        f"{card}, driver {driver}, torch {torch.__version__}, torchvision {torchvision.__version__}; {today}. "
        f"`benchmarks/gpu.sh` ({seconds:.0f} s in all): median of {s.iters} after {s.warmup} warm-up, random "
        f"weights, {NUM_CLASSES} classes, 8 random boxes per image. Speed ratio above 1: od2 faster.",
        "",
        markdown_table(rows),
        END,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 1 iteration, docs to a temp file")
    parser.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    parser.add_argument("--docs", type=Path, default=None,
                        help="the Markdown file whose GPU section is written (default docs/benchmarks.md; the dry "
                             "run's default is a temporary file)")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    if skip - set(STEPS):
        parser.error(f"--skip: unknown steps {sorted(skip - set(STEPS))}; choose from {', '.join(STEPS)}")
    s = settings(args.dry_run)
    if s.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA GPU is visible; run with --dry-run to check the script on the CPU")
    torch.backends.cudnn.benchmark = True
    card, driver = machine(s.device)
    print(f"device: {card} | driver {driver} | torch {torch.__version__} | torchvision {torchvision.__version__}")
    start, timer, rows = time.perf_counter(), Timer(s), []
    if not {"retinanet", "compiled"} <= skip:
        with step("retinanet" if "compiled" in skip else "retinanet + compiled", start):
            rows += retinanet_rows(s, timer, compiled="compiled" not in skip, plain="retinanet" not in skip)
    if "heads" not in skip:
        with step("heads", start):
            rows += head_rows(s)
    if "efficientdet" not in skip:
        with step("efficientdet", start):
            rows += efficientdet_rows(s, timer)
    seconds = time.perf_counter() - start
    print(f"\n{s.height}x{s.width} images (RetinaNet), {card}, {seconds:.0f} s\n")
    print(markdown_table(rows))
    if s.device.type == "cuda":
        print(f"max memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    docs = args.docs or (Path(tempfile.mkdtemp()) / "benchmarks.md" if args.dry_run else DOCS)
    write_section(docs, docs_section(rows, s, card, driver, seconds), BEGIN, END)
    print(f"wrote the GPU section of {docs}")


if __name__ == "__main__":
    main()

"""The ``od2 bench`` suite: every measure in one run on one machine, a table of medians and ratios, and the
table written into docs/benchmarks.md between markers (the rest of the file is kept)."""

from __future__ import annotations

import datetime
import os
import platform
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from od2.utils.atomic_write import atomic_write

from .coco_eval_speed import evaluation_seconds
from .data_speed import default_pipeline, loader_images_per_second
from .model_speed import TRAIN_BATCH, inference_seconds_per_image, train_seconds_per_iteration
from .timing import Rounds

MEASURES = ("inference", "train", "eval", "data")
BEGIN, END = "<!-- od2 bench: begin -->", "<!-- od2 bench: end -->"
WIDTH = 115  # docs/ line width


@dataclass(frozen=True)
class Row:
    """One measure: od2's time (or rate) against the reference tool's, each the best round with the median beside
    it (see :class:`~od2.benchmark.timing.Rounds`); ``goal`` is the largest od2 ÷ reference ratio aimed at (None
    where there is no reference)."""

    measure: str
    unit: str
    od2: float
    reference: float | None = None
    reference_name: str = ""
    goal: float | None = None
    note: str = ""
    od2_median: float | None = None
    reference_median: float | None = None

    @classmethod
    def timed(cls, measure: str, unit: str, od2: Rounds, reference: Rounds, reference_name: str, goal: float,
              note: str = "") -> Row:
        """A row from the rounds of both contenders."""
        return cls(measure, unit, od2.best, reference.best, reference_name, goal, note, od2.median, reference.median)

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.od2 / self.reference

    def cells(self) -> list[str]:
        """Table cells: measure, od2, reference, ratio, goal, goal met."""
        ratio, goal = self.ratio, self.goal
        return [
            self.measure + (f" ({self.note})" if self.note else ""),
            _value(self.od2, self.unit, self.od2_median),
            "" if self.reference is None else _value(self.reference, self.unit, self.reference_median)
            + f" ({self.reference_name})",
            "" if ratio is None else f"{ratio:.3f}",
            "" if goal is None else f"<= {goal:g}",
            "" if goal is None or ratio is None else ("yes" if ratio <= goal else "no"),
        ]


def _value(value: float, unit: str, median: float | None) -> str:
    return f"{value:.4g} {unit}" + ("" if median is None else f" (median {median:.4g})")


def run_suite(measures: tuple[str, ...] = MEASURES, iters: int = 5, height: int = 576, width: int = 768,
              eval_images: int = 500, data_images: int = 96, log=print) -> list[Row]:
    """Measure ``measures`` (``iters`` timed rounds each) and return the rows; ``log`` gets a line before each
    measure (they take minutes)."""
    rows: list[Row] = []
    size = f"{height}x{width}"
    if "inference" in measures:
        for batch in (1, 8):
            log(f"inference, batch {batch}, {size}: od2 and torchvision in turns, {iters} rounds")
            s = inference_seconds_per_image(batch, iters, height=height, width=width)
            rows.append(Row.timed(f"inference, batch {batch}, {size}", "s/img", s["od2"], s["torchvision"],
                                  "torchvision", 0.8))
    if "train" in measures:
        for bn, what in (("BN", "trainable BN"), ("FrozenBN", "FrozenBN, stem+res2 frozen")):
            log(f"training step, {TRAIN_BATCH} images of {size}, {what}: in turns, {iters} rounds")
            s = train_seconds_per_iteration(iters, bn, height=height, width=width)
            rows.append(Row.timed(f"train step, {TRAIN_BATCH} images of {size}, {what}", "s/it", s["od2"],
                                  s["torchvision"], "torchvision", 0.9))
    if "eval" in measures:
        log(f"COCO evaluation of {eval_images} images x 100 detections: od2 and pycocotools in turns")
        s, difference = evaluation_seconds(iters, eval_images)
        rows.append(Row.timed(f"COCO eval, {eval_images} images x 100 dets", "s", s["od2"], s["pycocotools"],
                              "pycocotools", 0.2, note=f"the 12 numbers differ by at most {difference:.1e}"))
    if "data" in measures:
        description, config, overrides = default_pipeline()
        log(f"training data pipeline ({description}), one process, one thread")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rate = loader_images_per_second(config, overrides, data_images)
        finally:
            torch.set_num_threads(threads)
        rows.append(Row("data pipeline per loader worker", "img/s", rate, note=description))
    return rows


def machine_description() -> str:
    """CPU model, cores, threads used, and the torch/torchvision versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}")


def markdown_table(rows: list[Row]) -> str:
    header = ["measure", "od2", "reference", "od2 ÷ reference", "goal", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def markdown_section(rows: list[Row], iters: int, command: str = "od2 bench") -> str:
    """The docs/benchmarks.md section: machine, date, the ``command`` that measured, table, how to read it."""
    intro = (f"{machine_description()}; {datetime.date.today().isoformat()}. `{command}`: {iters} rounds in which "
             "od2 and the reference run in turns after one warm-up round; each cell is the best round, with the "
             "median in brackets.")
    notes = [
        "Ratios are od2's best round over the reference's: below 1, od2 is faster. On a shared machine interference "
        "only ever adds time, so the best round is the most repeatable estimate of the code's own cost (the "
        "convention of Python's timeit); a median far above the best shows a run disturbed by other load.",
        "`od2 bench` sets glibc's malloc to keep freed memory (od2/utils/cpu_heap.py) for both contenders: by "
        "default every tensor above 32 MiB is mapped afresh and faulted in page by page, which added 0 to 1.9 s "
        "of system time to a training round depending on what ran before (more often to torchvision's, whose "
        "loss allocates more), and made single runs land on either side of a goal.",
        "RetinaNet-R50-FPN both sides (od2: configs/Base-RetinaNet.yaml), 80 classes, 9 anchors per cell of the "
        "same sizes, random weights with the same classification bias around logit(0.05), so that postprocessing "
        "handles full candidate lists (od2/benchmark/retinanet_pair.py). od2 takes P6 from C5 as the original "
        "does, torchvision from P5 (4.1M more parameters and 0.9 GFLOPs more for od2). For inference od2's model is "
        "converted as TEST.WINOGRAD=True does (od2.layers.winograd.convert_to_winograd).",
        "Training: SGD with momentum on 2 images with 8 random boxes each. Trainable BN is "
        "`retinanet_resnet50_fpn(weights=None, weights_backbone=None)`; FrozenBN with stem and res2 frozen is what "
        "torchvision builds when given ImageNet backbone weights, and od2's default FrozenBN with FREEZE_AT=2.",
        "COCO eval: a synthetic ground truth (od2/benchmark/coco_eval_speed.py); both evaluators indexed once, then "
        "timed from loading the results to the summary. Equal numbers are required.",
        "Data pipeline: BCCD's JPEGs when the datasets root ($OD2_DATASETS, else ./datasets) holds bccd/, else the "
        "embedded digits scenes; the loader with 0 workers, i.e. the work of one loader worker.",
    ]
    return "\n".join([
        BEGIN,
        "## od2 vs torchvision and pycocotools (`od2 bench`, part of `make bench`)",
        "",
        textwrap.fill(intro, WIDTH),
        "",
        markdown_table(rows),
        "",
        *(textwrap.fill(note, WIDTH, initial_indent="- ", subsequent_indent="  ") for note in notes),
        END,
    ])


def write_section(path: str | Path, section: str, begin: str = BEGIN, end: str = END) -> Path:
    """Put ``section`` into ``path`` in place of the previous one between the markers ``begin`` and ``end`` (those
    of `od2 bench` by default; benchmarks/gpu.sh has its own), or append it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

"""``od2 report``: the results document of the object_detection2 log, rebuilt from od2 run folders.

For each run folder (``OUTPUT_DIR`` of ``od2 train``: ``config.yaml``, ``metrics.jsonl``, ``eval/coco_summary.json``,
the last checkpoint) it writes a section as the log does: a heading (the config's name), the settings the log lists
(batch size x processes, backbone and its norm, neck and its norm, head norm, box loss, LR decay, augmentation,
iterations, train time, eval seconds per image) and the 12-line COCO block, the per-class table of
``eval/per_class.json`` with the best score threshold of ``eval/thresholds.json`` and links to the evaluation's
pictures (precision-recall, confusion matrix, F1) when the run has them; then one comparison table of all runs, and a
training-curve PNG per run (losses and AP against iteration).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from od2.config import CfgNode, load_config
from od2.engine.run_info import run_name
from od2.evaluation.coco_evaluator import STAT_NAMES, CocoSummary
from od2.evaluation.per_class import PER_CLASS_AP_NAMES, format_cell
from od2.modeling.build import neck_section_name

logger = logging.getLogger(__name__)

__all__ = ["RunRecord", "plot_curves", "read_run", "write_report"]

EVAL_FIGURES = (("pr_curves", "precision-recall curves"), ("confusion_matrix", "confusion matrix"),
                ("f1_curves", "F1 against score threshold"))

@dataclass
class RunRecord:
    """What one run folder says: its resolved config, training and evaluation records, final COCO numbers."""

    folder: Path
    name: str
    cfg: CfgNode
    train: list[dict] = field(default_factory=list)  # metrics.jsonl training records (iteration, losses, time)
    evals: list[dict] = field(default_factory=list)  # metrics.jsonl evaluation records (iteration, eval/AP, ...)
    summary: dict | None = None  # eval/coco_summary.json, else the last evaluation record
    per_class: dict | None = None  # eval/per_class.json
    thresholds: dict | None = None  # eval/thresholds.json
    world_size: int | None = None

    @property
    def iterations(self) -> int:
        return self.train[-1]["iteration"] if self.train else 0

    @property
    def stats(self) -> tuple[float, ...] | None:
        return tuple(float(self.summary[k]) for k in STAT_NAMES) if self.summary else None


def read_run(folder: str | os.PathLike) -> RunRecord:
    """Read a run folder; raises ``FileNotFoundError`` naming the folder when it has no ``config.yaml``."""
    folder = Path(folder)
    config = folder / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} is not an od2 run folder (no config.yaml)")
    cfg = load_config(config)
    run = RunRecord(folder=folder, name=run_name(folder), cfg=cfg)
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for number, line in enumerate(metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: not JSON, skipped", metrics, number)
                continue
            (run.evals if any(k.startswith("eval/") for k in record) else run.train).append(record)
    summary_file = folder / "eval" / "coco_summary.json"
    if summary_file.is_file():
        run.summary = json.loads(summary_file.read_text())
    elif run.evals:
        run.summary = {k.removeprefix("eval/"): v for k, v in run.evals[-1].items()}
    for attribute, name in (("per_class", "per_class.json"), ("thresholds", "thresholds.json")):
        path = folder / "eval" / name
        if path.is_file():
            try:
                setattr(run, attribute, json.loads(path.read_text()))
            except json.JSONDecodeError as exc:
                logger.warning("%s: not JSON (%s), left out of the report", path, exc)
    last = folder / "last_checkpoint"
    if last.is_file() and (folder / last.read_text().strip()).is_file():
        path = folder / last.read_text().strip()
        try:
            run.world_size = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("world_size")
        except Exception as exc:  # a truncated or unsafe checkpoint costs the report one setting, not the run
            logger.warning("%s: cannot read it (%s); the run's process count is left out", path,
                           str(exc).splitlines()[0])
    return run


def _describe(run: RunRecord) -> list[str]:
    """The log's bullet list of settings."""
    model, solver, data = run.cfg.MODEL, run.cfg.SOLVER, run.cfg.INPUT
    backbone = model.BACKBONE.NAME + (str(model.RESNETS.DEPTH) if model.BACKBONE.NAME == "resnet" else "")
    neck = neck_section_name(run.cfg)
    augment = [data.DATAPROCESS] + ([f"Stitch {data.STITCH}"] if data.STITCH else []) + (
        ["Stitcher"] if data.STITCHER.ENABLED else [])
    processes = f" on {run.world_size} process{'es' if run.world_size > 1 else ''}" if run.world_size else ""
    train_time = run.train[-1].get("time") if run.train else None
    s_per_img = (run.summary or {}).get("s_per_img")
    return [
        f"batch_size: {solver.IMS_PER_BATCH}{processes}",
        f"backbone {backbone}, {model.BACKBONE.NORM}",
        f"{model.NECK.NAME} normal: {model[neck].NORM or 'none'}, activation {model[neck].ACTIVATION_FN}",
        f"Head normal: {model.RETINANET.NORM or 'none'}, activation {model.RETINANET.ACTIVATION_FN}, "
        f"{model.RETINANET.NUM_CONVS} convs",
        f"Loss: {model.RETINANET.BBOX_REG_LOSS_TYPE}",
        f"LR decay: {solver.LR_DECAY_TYPE}, base lr {solver.BASE_LR}",
        f"augmentation: {', '.join(augment)}",
        f"iterator: {run.iterations} of {solver.MAX_ITER}",
        f"train time: {train_time / 3600:.2f}h" if train_time else "train time: unknown",
        f"eval time: {s_per_img:.4f}s/img" if s_per_img else "eval time: not evaluated",
    ]


def _per_class_section(run: RunRecord, out_dir: Path) -> list[str]:
    """Markdown: the per-class table (AP in %), the best score threshold by F1, and links to the eval pictures."""
    lines = []
    if run.per_class:
        columns = [*PER_CLASS_AP_NAMES, "num_gt", "num_dt", "best_f1", "best_score_thresh"]
        lines += ["", "| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, row in run.per_class.items():
            cells = [format_cell(column, row.get(column)) for column in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    overall = (run.thresholds or {}).get("overall") or {}
    if overall.get("score_thresh") is not None:
        lines += ["", f"Best score threshold by F1 (IoU 0.5): {overall['score_thresh']:.4f} (F1 {overall['f1']:.3f}, "
                      f"precision {overall['precision']:.3f}, recall {overall['recall']:.3f}): the "
                      f"`od2 predict --score-thresh` to deploy with."]
    links = [f"[{title}]({Path(os.path.relpath(run.folder / 'eval' / f'{name}.png', out_dir)).as_posix()})"
             for name, title in EVAL_FIGURES if (run.folder / "eval" / f"{name}.png").is_file()]
    if links:
        lines += ["", "Evaluation pictures: " + ", ".join(links) + "."]
    return lines


def plot_curves(run: RunRecord, path: Path) -> Path | None:
    """Losses (left) and COCO AP / AP50 (right) against iteration; None when the run has no training records."""
    if not run.train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    its = [r["iteration"] for r in run.train]
    for key in sorted({k for r in run.train for k in r if k.startswith("loss_")} | {"total_loss"}):
        left.plot(its, [r.get(key, float("nan")) for r in run.train], label=key, linewidth=1)
    left.set(xlabel="iteration", ylabel="loss", title=f"{run.name}: training loss", yscale="log")
    left.legend(fontsize=8)
    if run.evals:
        eval_its = [r["iteration"] for r in run.evals]
        for key in ("eval/AP", "eval/AP50"):
            right.plot(eval_its, [r.get(key, float("nan")) for r in run.evals], marker="o", label=key[5:])
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=right.transAxes)
    right.set(xlabel="iteration", ylabel="COCO AP", title="evaluation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the results document for ``folders`` to ``out`` (Markdown) and the curves to ``<out stem>_curves/``."""
    out = Path(out)
    runs = [read_run(folder) for folder in folders]
    seen: dict[str, int] = {}
    for run in runs:  # the same config trained twice: tell the sections (and curve files) apart by folder
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.name} ({run.folder.name})"
    curves_dir = out.parent / f"{out.stem}_curves"
    lines = ["# od2 results", "", f"{len(runs)} runs, rebuilt from their run folders by `od2 report`.", ""]
    lines += ["| run | AP | AP50 | AP75 | APs | APm | APl | iterations | s/img |", "|---" * 9 + "|"]
    for run in runs:
        ap = " | ".join(f"{v:.3f}" for v in run.stats[:6]) if run.stats else " | ".join(["-"] * 6)
        s_per_img = (run.summary or {}).get("s_per_img")
        lines.append(f"| {run.name} | {ap} | {run.iterations} | {f'{s_per_img:.4f}' if s_per_img else '-'} |")
    for run in runs:
        lines += ["", f"## {run.name}", "", f"Run folder: `{run.folder}`", ""]
        lines += [f"- {item}" for item in _describe(run)]
        if run.stats:
            lines += ["", "```", CocoSummary(run.stats, 0.0).table(), "```"]
        lines += _per_class_section(run, out.parent)
        curve = plot_curves(run, curves_dir / f"{run.name.replace(' ', '_').replace('/', '_')}.png")
        if curve:
            lines += ["", f"![training curves of {run.name}]({curve.relative_to(out.parent).as_posix()})"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    logger.info("report of %d runs written to %s", len(runs), out)
    return out

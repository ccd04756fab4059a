"""Plot a learning-rate schedule (``od2 lr-plot``): sample it, list its landmarks, draw it to a PNG.

The curve is the trainer's own :class:`~od2.engine.lr_schedule.LRSchedule`, evaluated at a few thousand
evenly spaced iterations plus every iteration where it changes abruptly (the warmup boundary, each of
``STEPS`` and the iteration just before it), so that steps are drawn as sharp edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from od2.engine.lr_schedule import LRSchedule
from od2.utils.atomic_write import atomic_write

DEFAULT_POINTS = 4000


def breakpoints(schedule: LRSchedule) -> list[int]:
    """Iterations where the schedule changes abruptly, and the ones just before, inside ``[0, max_iter)``."""
    edges = [0, schedule.max_iter - 1]
    for edge in (schedule.warmup_iters, *schedule.steps):
        edges += [edge - 1, edge]
    return sorted({it for it in edges if 0 <= it < schedule.max_iter})


def sample_schedule(schedule: LRSchedule, max_points: int = DEFAULT_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(iterations int64 [N], lrs float64 [N])``, sorted, covering ``0..max_iter-1``.

    At most ``max_points`` evenly spaced iterations plus :func:`breakpoints`; each value is exactly
    ``schedule(iteration)``.
    """
    if schedule.max_iter < 1:
        raise ValueError(f"SOLVER.MAX_ITER must be at least 1 to plot a schedule, got {schedule.max_iter}")
    even = np.linspace(0, schedule.max_iter - 1, num=min(max_points, schedule.max_iter)).round()
    iterations = np.union1d(even.astype(np.int64), np.asarray(breakpoints(schedule), np.int64))
    lrs = np.fromiter((schedule(int(it)) for it in iterations), np.float64, count=len(iterations))
    return iterations, lrs


def landmarks(schedule: LRSchedule) -> list[tuple[str, int, float]]:
    """``(what, iteration, lr)`` at the start, the end of warmup, each piecewise step and the last iteration."""
    points = [("start", 0)]
    if 0 < schedule.warmup_iters < schedule.max_iter:
        points.append(("end of warmup", schedule.warmup_iters))
    if schedule.decay_type == "piecewise":
        steps = [s for s in sorted(set(schedule.steps)) if 0 < s < schedule.max_iter]
        points += [(f"step {k}", s) for k, s in enumerate(steps, 1)]
    if schedule.max_iter - 1 > 0:
        points.append(("last iteration", schedule.max_iter - 1))
    return [(what, it, schedule(it)) for what, it in points]


def format_landmarks(schedule: LRSchedule) -> str:
    """The landmark table printed by ``od2 lr-plot``: one ``iteration  lr  what`` row per landmark."""
    rows = [f"{'iteration':>10}  {'lr':<14}  what"]
    rows += [f"{it:>10}  {lr:<14.8g}  {what}" for what, it, lr in landmarks(schedule)]
    return "\n".join(rows)


def _summary(schedule: LRSchedule) -> str:
    """Text for the plot's parameter box."""
    lines = [f"BASE_LR = {schedule.base_lr:g}"]
    if schedule.warmup_iters > 0:
        lines.append(f"warmup: {schedule.warmup_iters} iters from {schedule.warmup_factor:g} x BASE_LR")
    else:
        lines.append("warmup: none")
    if schedule.decay_type == "cosine":
        lines.append(f"MIN_LR = {schedule.min_lr:g}")
    elif schedule.decay_type == "piecewise":
        steps = ", ".join(str(s) for s in sorted(schedule.steps)) or "none"
        lines.append(f"GAMMA = {schedule.gamma:g} at STEPS {steps}")
    return "\n".join(lines)


def plot_schedule(schedule: LRSchedule, out: str | Path, title: str = "", log_y: bool = False,
                  max_points: int = DEFAULT_POINTS) -> Path:
    """Draw LR against iteration to the PNG ``out`` (written atomically; parent folders created).

    Dotted vertical lines mark the end of warmup and each piecewise step; a box lists the parameters.
    Uses the Agg canvas directly, so no display and no global pyplot state are involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    iterations, lrs = sample_schedule(schedule, max_points)
    fig = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(iterations, lrs, color="tab:blue", linewidth=1.5)
    marks = [(what, it) for what, it, _ in landmarks(schedule) if what == "end of warmup" or what.startswith("step")]
    for what, it in marks:
        ax.axvline(it, color="gray", linestyle=":", linewidth=1)
        ax.annotate(what, (it, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="dimgray")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlim(0, max(schedule.max_iter - 1, 1))
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate" + (" (log scale)" if log_y else ""))
    ax.set_title(title or f"LR_DECAY_TYPE={schedule.decay_type}")
    ax.grid(True, alpha=0.3)
    # the parameter box is a legend without a handle, so that loc="best" keeps it off the curve
    box = ax.legend([Line2D([], [], linestyle="none")], [_summary(schedule)], loc="best", fontsize=9,
                    handlelength=0, handletextpad=0, fancybox=True, framealpha=0.9)
    box.get_frame().set_edgecolor("gray")
    fig.tight_layout()

    out = Path(out)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png")
    return out

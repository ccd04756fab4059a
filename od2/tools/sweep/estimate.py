"""Seconds per training iteration for the sweep's plan, and where each figure comes from.

Per arm, the first source that has a figure: (a) the sweep's own finished or partial runs of that arm (their
``metrics.jsonl``), (b) ``--measure N`` (N iterations of the arm's config trained in a temporary folder: asked for
on the command line, so it goes before a figure written in the spec), (c) ``step_seconds`` of the arm, else of
the spec, with its ``step_source``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .commands import od2_command
from .spec import Arm, PlannedRun, SweepSpec


@dataclass(frozen=True)
class StepTime:
    """``seconds`` per iteration of an arm's run and ``source``: where the figure comes from, in words."""

    seconds: float
    source: str


def seconds_per_iteration(metrics_file: Path) -> tuple[float, int] | None:
    """(seconds, iterations) of training timed in a run's ``metrics.jsonl``, or None when it times none.

    Training records carry ``iteration`` (steps done) and ``time`` (seconds since training (re)started). Within one
    start, the differences between consecutive records time the steps alone: the first record's share, which holds
    the start-up (data loading, the first step's allocations), is left out. A resume starts a new segment.
    """
    try:
        lines = metrics_file.read_text().splitlines()
    except OSError:
        return None
    points = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill
            continue
        if "time" in record and "iteration" in record:
            points.append((record["iteration"], record["time"]))
    seconds, iterations = 0.0, 0
    for (it_a, t_a), (it_b, t_b) in zip(points, points[1:]):
        if it_b > it_a and t_b >= t_a:  # a resume restarts the clock: the pair across it is no measure
            seconds, iterations = seconds + t_b - t_a, iterations + it_b - it_a
    return (seconds, iterations) if iterations else None


def measured_in_runs(runs: Iterable[PlannedRun]) -> StepTime | None:
    """The step time of an arm from the metrics.jsonl of its runs' folders (all runs pooled)."""
    seconds, iterations, sources = 0.0, 0, []
    for run in runs:
        measure = seconds_per_iteration(run.folder / "metrics.jsonl")
        if measure:
            seconds, iterations = seconds + measure[0], iterations + measure[1]
            sources.append(run.relative_dir)
    if not iterations:
        return None
    return StepTime(seconds / iterations, f"measured: {iterations} iterations of this sweep's {', '.join(sources)}")


def measure_arm(run: PlannedRun, iterations: int, env: dict[str, str] | None = None) -> StepTime:
    """Train ``iterations`` iterations of ``run``'s config in a temporary folder (no evaluation, one metrics record
    per step) and time them.

    Raises:
        RuntimeError: the training failed (with the end of its output).
    """
    with tempfile.TemporaryDirectory(prefix="od2-sweep-measure-") as folder:
        command = [*od2_command(run.arm.processes), "train", "--config", run.arm.config, *run.shared_overrides,
                   *run.arm.overrides, f"SEED={run.seed}", f"OUTPUT_DIR={folder}", f"SOLVER.MAX_ITER={iterations}",
                   "TEST.EVAL_PERIOD=0", "LOG_PERIOD=1", f"SOLVER.CHECKPOINT_PERIOD={iterations + 1}"]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
            raise RuntimeError(f"--measure: training arm {run.arm.name!r} failed:\n{tail}")
        measure = seconds_per_iteration(Path(folder) / "metrics.jsonl")
    if measure is None:
        raise RuntimeError(f"--measure {iterations}: too few iterations to time arm {run.arm.name!r} "
                           "(the first is start-up; measure at least 2)")
    return StepTime(measure[0] / measure[1], f"--measure {iterations}: timed here, {measure[1]} iterations")


def from_spec(spec: SweepSpec, arm: Arm) -> StepTime | None:
    if arm.step_seconds is not None:
        return StepTime(arm.step_seconds, f"spec, arm {arm.name}: {arm.step_source or 'no step_source given'}")
    if spec.step_seconds is not None:
        return StepTime(spec.step_seconds, f"spec: {spec.step_source or 'no step_source given'}")
    return None


def step_times(spec: SweepSpec, runs: list[PlannedRun], measure: int = 0,
               log: Callable[[str], None] = print) -> dict[str, StepTime | None]:
    """arm name -> its step time (None where no source has one), in the order of the module docstring."""
    times: dict[str, StepTime | None] = {}
    measured: dict[tuple, StepTime] = {}  # arms with the same config and overrides are timed once
    for arm in spec.arms:
        arm_runs = [run for run in runs if run.arm.name == arm.name]
        found = measured_in_runs(arm_runs)
        same_config = (arm.config, arm.overrides, arm.gpus_per_run)
        if found is None and measure:
            if same_config not in measured:
                log(f"measuring arm {arm.name}: {measure} iterations ...")
                measured[same_config] = measure_arm(arm_runs[0], measure)
            found = measured[same_config]
        times[arm.name] = found or from_spec(spec, arm)
    return times

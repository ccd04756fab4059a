"""``od2 sweep --dry-run``: the plan as a table, one line per run, with the iterations left, the estimated time
and GPU-hours, and the source of each arm's step time."""

from __future__ import annotations

from .estimate import StepTime
from .folder import RunState
from .spec import PlannedRun, SweepSpec


def iterations_left(run: PlannedRun, state: RunState) -> int:
    if state.kind in ("done", "evaluate"):
        return 0
    return max(run.max_iter - state.iteration, 0)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(spec: SweepSpec, runs: list[PlannedRun], states: dict[str, RunState],
                times: dict[str, StepTime | None], previous_status: dict[str, str], jobs: int = 1) -> str:
    """The dry-run text. ``states``/``previous_status``: per run ``relative_dir``, its folder's state and the status
    sweep.json gave it (``failed`` shows). When the spec gives ``gpus_per_run``, GPU-hours count that many GPUs
    for each run's estimated time. ``jobs`` > 1 (local runs at once) adds the wall time of the total spread over
    that many runs at once."""
    gpus = any(arm.gpus_per_run for arm in spec.arms)
    name_width = max(len("arm"), *(len(arm.name) for arm in spec.arms))
    header = (f"{'arm':<{name_width}}  {'seed':>6}  {'iters':>8}  {'state':<30}  {'s/iter':>7}  {'est. time':>10}"
              + (f"  {'GPUs':>4}  {'GPU-h':>8}" if gpus else ""))
    lines = [f"sweep {spec.path} -> {spec.output}: {len(spec.arms)} arms x {len(spec.seeds)} seeds = "
             f"{len(runs)} runs (reference arm: {spec.reference_arm})", header, "-" * len(header)]
    total_iters, total_seconds, total_gpu_hours, unknown = 0, 0.0, 0.0, 0
    for run in runs:
        state = states[run.relative_dir]
        left = iterations_left(run, state)
        step = times.get(run.arm.name)
        failed_before = previous_status.get(run.relative_dir) == "failed" and state.kind != "done"
        described = state.describe() + (" (failed before)" if failed_before else "")
        total_iters += left
        seconds = None if step is None else left * step.seconds
        gpu_hours = None if seconds is None else seconds * run.arm.processes / 3600
        if seconds is None:
            unknown += 1
        else:
            total_seconds, total_gpu_hours = total_seconds + seconds, total_gpu_hours + gpu_hours
        line = (f"{run.arm.name:<{name_width}}  {run.seed:>6}  {left:>8}  {described:<30}  "
                f"{'?' if step is None else f'{step.seconds:.3f}':>7}  "
                f"{'?' if seconds is None else format_duration(seconds):>10}")
        if gpus:
            line += f"  {run.arm.processes:>4}  {'?' if gpu_hours is None else f'{gpu_hours:.1f}':>8}"
        lines.append(line)
    lines.append("-" * len(header))
    lines.append(f"total: {total_iters} iterations to train of {sum(r.max_iter for r in runs)}; estimated "
                 f"{format_duration(total_seconds)} of training one run at a time"
                 + (f", {total_gpu_hours:.1f} GPU-hours" if gpus else "") + ", plus one evaluation per run"
                 + (f"; {unknown} runs have no step time" if unknown else ""))
    if jobs > 1:
        lines.append(f"with --jobs {jobs}: about {format_duration(total_seconds / jobs)} of wall time, if each run "
                     f"keeps its step time with {jobs} at once (true of a step time measured in runs that ran "
                     f"{jobs} at once; on a CPU machine, runs that shared its cores step slower than one alone)")
    lines.append("step time per arm:")
    for arm in spec.arms:
        step = times.get(arm.name)
        lines.append(f"  {arm.name}: " + (f"{step.seconds:.3f} s/iter, {step.source}" if step else
                                          "unknown (no run of this sweep timed it, no step_seconds in the spec): "
                                          "--measure N times it here"))
    return "\n".join(lines)

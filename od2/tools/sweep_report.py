"""``od2 report SWEEP_DIR``: the statistics of an ``od2 sweep`` folder over its seeds, as Markdown, JSON and a PNG.

A sweep folder holds ``sweep.json`` (the spec and one entry per (arm, seed) run: ``dir``, ``status``, ``error``,
``seconds``) and the run folders ``<arm>/seed<N>/`` with their final evaluation ``eval/coco_summary.json``. For each
arm the report gives the seeds done and the mean with its t interval of every COCO metric and of the seconds per
image; for each arm against the reference arm (``base``, else the spec's first arm) the paired difference of one
metric over the seeds both finished. Runs that are not done (pending, running, failed, or done without a readable
summary) are listed with their reason. It writes ``<sweep>/report.md``, ``report.json`` and ``report.png``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from od2.evaluation.coco_evaluator import STAT_NAMES
from od2.tools.sweep_stats import (
    MAX_PLANNED_SEEDS,
    MeanInterval,
    PairedDifference,
    mean_interval,
    paired_difference,
    seeds_for_power,
)
from od2.utils.atomic_write import atomic_write
from od2.utils.cfg_node import ConfigError

__all__ = ["SweepResults", "is_sweep_folder", "read_sweep", "sweep_numbers", "sweep_markdown", "plot_sweep",
           "write_sweep_report"]

REFERENCE_ARM = "base"
SPEED = "s_per_img"
_AP_COLUMNS = STAT_NAMES[:6]
_AR_COLUMNS = STAT_NAMES[6:]
_MAX_ERROR_CHARS = 160
PLANNING_POWER = 0.8  # the seeds a sweep would need are planned for this power, the usual convention


def is_sweep_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a ``sweep.json`` (written by ``od2 sweep``)."""
    return (Path(folder) / "sweep.json").is_file()


@dataclass
class SweepResults:
    """What a sweep folder says: its arms in spec order, the reference arm, each done run's final numbers."""

    folder: Path
    arms: list[str]
    reference: str
    # arm -> seed -> coco_summary.json of the run (the 12 COCO numbers, s_per_img, ...)
    summaries: dict[str, dict[int, dict]] = field(default_factory=dict)
    seconds: dict[str, dict[int, float]] = field(default_factory=dict)  # arm -> seed -> the run's wall seconds
    not_done: list[dict] = field(default_factory=list)  # {arm, seed, dir, status, error}


def _require(record: dict, key: str, where: str):
    if not isinstance(record, dict) or key not in record:
        raise ConfigError(f"{where}: no key {key!r} (is this a sweep.json written by od2 sweep?)")
    return record[key]


def _one_line(text: str | None) -> str | None:
    """An error message fit for a table cell: its last non-empty line (a traceback's exception), shortened."""
    if not text:
        return text
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= _MAX_ERROR_CHARS else line[:_MAX_ERROR_CHARS - 3] + "..."


def _read_summary(path: Path) -> tuple[dict | None, str | None]:
    """The run's coco_summary.json, or None and why it cannot be used."""
    if not path.is_file():
        return None, f"no {path.parent.name}/{path.name}"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path}: not readable JSON ({exc})"
    if not isinstance(summary, dict):
        return None, f"{path}: not a JSON object"
    missing = [k for k in (*STAT_NAMES, SPEED) if not isinstance(summary.get(k), (int, float))]
    if missing:
        return None, f"{path}: no number for {', '.join(missing)}"
    return summary, None


def read_sweep(folder: str | os.PathLike) -> SweepResults:
    """Read ``<folder>/sweep.json`` and the summaries of its done runs.

    Raises:
        FileNotFoundError: no sweep.json in ``folder``.
        ConfigError: sweep.json is not JSON or lacks a key of the sweep layout (named with the file).
    """
    folder = Path(folder)
    path = folder / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder (no sweep.json)")
    try:
        sweep = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    spec = _require(sweep, "spec", str(path))
    arms = list(_require(spec, "arms", f"{path}: spec"))
    if not arms:
        raise ConfigError(f"{path}: spec.arms is empty")
    reference = REFERENCE_ARM if REFERENCE_ARM in arms else arms[0]
    runs = _require(sweep, "runs", str(path))
    for number, run in enumerate(runs):
        for key in ("arm", "seed", "dir", "status"):
            _require(run, key, f"{path}: runs[{number}]")
        if run["arm"] not in arms:  # a run of an arm the spec no longer names is still reported
            arms.append(run["arm"])
    results = SweepResults(folder, arms, reference)
    for run in runs:
        arm, seed = run["arm"], int(run["seed"])
        error = run.get("error")
        summary = None
        if run["status"] == "done":
            summary, error = _read_summary(folder / run["dir"] / "eval" / "coco_summary.json")
        if summary is None:
            results.not_done.append(dict(arm=arm, seed=seed, dir=run["dir"], status=run["status"],
                                         error=_one_line(error)))
            continue
        results.summaries.setdefault(arm, {})[seed] = summary
        if isinstance(run.get("seconds"), (int, float)):
            results.seconds.setdefault(arm, {})[seed] = float(run["seconds"])
    return results


def _interval_record(interval: MeanInterval, values: dict[int, float] | None = None) -> dict:
    record = dict(n=interval.n, mean=interval.mean, sd=interval.sd, low=interval.low, high=interval.high)
    if interval.zero_spread:
        record["note"] = "every seed gave the same number: an interval of width 0"
    elif interval.n and not interval.defined:
        record["note"] = "fewer than 2 seeds: the interval is undefined"
    if values is not None:
        record["values"] = {str(seed): value for seed, value in sorted(values.items())}
    return record


def _paired_record(paired: PairedDifference) -> dict:
    """The paired difference's numbers, with ``seeds_for_power``: the paired seeds at which a difference of the
    observed mean and spread would be resolved with probability PLANNING_POWER (None: undefined with fewer than 2
    seeds, or more than MAX_PLANNED_SEEDS)."""
    interval = paired.interval
    planned = None
    if interval.defined:
        planned = seeds_for_power(interval.mean, interval.sd, interval.confidence, PLANNING_POWER)
    return dict(seeds=list(paired.seeds), differences=list(paired.differences),
                **_interval_record(interval), p_value=paired.p_value, signs=paired.signs,
                verdict=paired.verdict, seeds_for_power=planned)


def _planned_cell(record: dict) -> str:
    if record["low"] is None:
        return "-"
    if record["mean"] == 0:
        return "never: Δ is 0"
    if record["seeds_for_power"] is None:
        return f"> {MAX_PLANNED_SEEDS}"
    return str(record["seeds_for_power"])


def sweep_numbers(results: SweepResults, metric: str = "AP", confidence: float = 0.95,
                  reference: str | None = None) -> dict:
    """The report's numbers (report.json): per arm the seeds done and every metric's mean and t interval; per
    other arm the paired difference of ``metric`` against ``reference`` (default: the sweep's reference arm).
    Undefined numbers are None."""
    if metric not in STAT_NAMES:
        raise ConfigError(f"--metric {metric}: not a COCO metric; one of {', '.join(STAT_NAMES)}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"--confidence {confidence}: must lie strictly between 0 and 1")
    reference = reference or results.reference
    if reference not in results.arms:
        raise ConfigError(f"--reference {reference}: no such arm in {results.folder / 'sweep.json'}; the arms are "
                          f"{', '.join(results.arms)}")
    arms, paired = {}, {}
    reference_values = {seed: s[metric] for seed, s in results.summaries.get(reference, {}).items()}
    for arm in results.arms:
        done = results.summaries.get(arm, {})
        metrics = {}
        for name in (*STAT_NAMES, SPEED):
            values = {seed: float(summary[name]) for seed, summary in done.items()}
            metrics[name] = _interval_record(mean_interval(list(values.values()), confidence), values)
        seconds = results.seconds.get(arm, {})
        arms[arm] = dict(seeds_done=sorted(done), metrics=metrics,
                         run_seconds=_interval_record(mean_interval(list(seconds.values()), confidence), seconds))
        if arm != reference:
            values = {seed: summary[metric] for seed, summary in done.items()}
            paired[arm] = _paired_record(paired_difference(values, reference_values, confidence))
    return dict(sweep=str(results.folder), metric=metric, confidence=confidence, reference=reference,
                arms=arms, paired=paired, not_done=results.not_done)


def _mean_cell(record: dict, digits: int = 3) -> str:
    if record["mean"] is None:
        return "-"
    if record["low"] is None:
        return f"{record['mean']:.{digits}f} ± n/a"
    return f"{record['mean']:.{digits}f} ± {(record['high'] - record['low']) / 2:.{digits}f}"


def _in_minutes(record: dict) -> dict:
    return {k: v / 60 if k in ("mean", "low", "high") and v is not None else v for k, v in record.items()}


def _interval_cell(record: dict) -> str:
    if record["n"] == 0:
        return "undefined: no paired seed"
    if record["low"] is None:
        return "undefined: 1 paired seed"
    cell = f"[{record['low']:+.3f}, {record['high']:+.3f}]"
    return cell + " (width 0: every seed gave the same difference)" if record["sd"] == 0 else cell


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def sweep_markdown(numbers: dict, png_name: str | None = "report.png") -> str:
    """The report as Markdown: per-arm tables (mean ± half the t interval), the paired differences against the
    reference, the runs not done, and a link to the PNG."""
    level = f"{numbers['confidence']:.0%}"
    arms, metric = numbers["arms"], numbers["metric"]
    lines = [f"# Sweep {Path(numbers['sweep']).name}", "",
             f"Mean ± half the {level} t interval (n - 1 degrees of freedom) over the seeds done; n/a: fewer than "
             f"2 seeds, the interval is undefined.", "", "## Average precision", ""]
    lines += _table(["arm", "seeds done", *_AP_COLUMNS, "s/img", "run min"],
                    [[arm, str(len(a["seeds_done"])), *(_mean_cell(a["metrics"][k]) for k in _AP_COLUMNS),
                      _mean_cell(a["metrics"][SPEED], 4), _mean_cell(_in_minutes(a["run_seconds"]), 1)]
                     for arm, a in arms.items()])
    lines += ["", "## Average recall", ""]
    lines += _table(["arm", "seeds done", *_AR_COLUMNS],
                    [[arm, str(len(a["seeds_done"])), *(_mean_cell(a["metrics"][k]) for k in _AR_COLUMNS)]
                     for arm, a in arms.items()])
    lines += ["", f"## {metric} against `{numbers['reference']}`, paired by seed", "",
              f"Difference arm - {numbers['reference']} over the seeds both finished, its {level} t interval and "
              f"the paired t test's p-value. Verdict: better / worse when the interval excludes 0, else not "
              f"resolved.", ""]
    rows = []
    for arm, p in numbers["paired"].items():
        p_value = "-" if p["p_value"] is None else f"{p['p_value']:.3g}"
        mean = "-" if p["mean"] is None else f"{p['mean']:+.3f}"
        rows.append([arm, " ".join(map(str, p["seeds"])) or "none", mean, _interval_cell(p), p_value,
                     p["signs"] or "-", p["verdict"], _planned_cell(p)])
    power = f"{PLANNING_POWER:.0%}"
    lines += _table(["arm", "paired seeds", f"Δ {metric}", f"{level} interval", "p", "sign per seed", "verdict",
                     f"seeds for {power} power"], rows) if rows else ["Only the reference arm: nothing to compare."]
    if rows:
        lines += ["", f"Seeds for {power} power: the paired seeds at which a difference of this mean and per-seed "
                  f"spread would be resolved {power} of the time (the paired t test's sample-size rule); the spread "
                  f"is estimated from the seeds done, so read it as an order of magnitude."]
    if numbers["not_done"]:
        lines += ["", "## Runs not done", ""]
        lines += _table(["arm", "seed", "run folder", "status", "why"],
                        [[r["arm"], str(r["seed"]), f"`{r['dir']}`", r["status"],
                          (r["error"] or "-").replace("|", "\\|")] for r in numbers["not_done"]])
    if png_name:
        lines += ["", f"![{metric} per arm and paired differences]({png_name})"]
    return "\n".join(lines) + "\n"


def plot_sweep(numbers: dict, path: str | os.PathLike) -> Path:
    """Left: each arm's mean ``metric`` with its t interval as error bar and the seeds as dots. Right: each arm's
    paired difference against the reference with its interval, and a line at 0. An undefined interval has no bar."""
    from matplotlib.figure import Figure  # matplotlib loads only where a picture is drawn

    metric, level = numbers["metric"], f"{numbers['confidence']:.0%}"
    fig = Figure(figsize=(11, 4.2), dpi=80)
    left, right = fig.subplots(1, 2)
    panels = [(left, {arm: a["metrics"][metric] for arm, a in numbers["arms"].items()},
               f"{metric} per arm (mean, {level} interval)", metric),
              (right, numbers["paired"], f"{metric} - {numbers['reference']}, paired by seed", f"Δ {metric}")]
    for ax, records, title, ylabel in panels:
        for x, record in enumerate(records.values()):
            seeds = record.get("differences") or list(record.get("values", {}).values())
            ax.plot([x] * len(seeds), seeds, "o", color="0.6", markersize=3, zorder=1)
            if record["mean"] is None:
                continue
            mean = record["mean"]
            bar = None if record["low"] is None else [[mean - record["low"]], [record["high"] - mean]]
            ax.errorbar([x], [mean], yerr=bar, fmt="s", color="C0", capsize=5, zorder=2)
        if ax is right:
            ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(records)), list(records), rotation=30, ha="right", fontsize=8)
        ax.set(title=title, ylabel=ylabel, xlim=(-0.5, max(len(records), 1) - 0.5))
        ax.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.22, top=0.92, wspace=0.22)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


@dataclass
class SweepReport:
    markdown: str
    paths: dict[str, Path]  # "md", "json", "png"


def write_sweep_report(folder: str | os.PathLike, metric: str = "AP", confidence: float = 0.95,
                       reference: str | None = None) -> SweepReport:
    """Read the sweep in ``folder`` and write ``report.md``, ``report.json`` and ``report.png`` into it; the
    paired differences are against ``reference`` (default ``base``, else the spec's first arm)."""
    folder = Path(folder)
    numbers = sweep_numbers(read_sweep(folder), metric, confidence, reference)
    paths = {"md": folder / "report.md", "json": folder / "report.json", "png": folder / "report.png"}
    markdown = sweep_markdown(numbers, paths["png"].name)
    plot_sweep(numbers, paths["png"])
    with atomic_write(paths["json"]) as tmp:
        tmp.write_text(json.dumps(numbers, indent=2) + "\n")
    with atomic_write(paths["md"]) as tmp:
        tmp.write_text(markdown)
    return SweepReport(markdown, paths)

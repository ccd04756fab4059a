"""The sweep folder: what each run folder holds (done, trained but not evaluated, resumable, new) and
``<output>/sweep.json``, the record ``od2 report SWEEP_DIR`` reads.

sweep.json: ``{"spec": <spec as loaded, paths resolved>, "spec_file": str, "runs": [{"arm", "seed", "dir":
"ARM/seedN", "status": "pending|running|done|failed", "error": str|null, "seconds": float|null}]}``. A run is
done iff its folder holds ``model_final.pth`` and ``eval/coco_summary.json`` (the final evaluation on the test set).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from od2.utils.atomic_write import atomic_write

SWEEP_JSON = "sweep.json"
FINAL_WEIGHTS = "model_final.pth"
SUMMARY = Path("eval") / "coco_summary.json"
STDOUT = "sweep_stdout.txt"
CHECKPOINT_NAME = re.compile(r"model_(\d{7})\.pth")


@dataclass(frozen=True)
class RunState:
    """What a run folder needs next. ``kind``: ``done``; ``evaluate`` (trained, final evaluation missing);
    ``resume`` (checkpoints of an unfinished run, the newest after ``iteration`` steps); ``new``."""

    kind: str
    iteration: int = 0

    def describe(self) -> str:
        return {"done": "done", "evaluate": "trained, evaluate", "resume": f"resume at iter {self.iteration}",
                "new": "new"}[self.kind]


def run_state(folder: Path) -> RunState:
    """The state of a run folder from its files (no checkpoint is read)."""
    if (folder / FINAL_WEIGHTS).is_file():
        return RunState("done") if (folder / SUMMARY).is_file() else RunState("evaluate")
    iterations = [int(m[1]) for p in folder.glob("model_*.pth") if (m := CHECKPOINT_NAME.fullmatch(p.name))]
    pointer = folder / "last_checkpoint"
    if pointer.is_file() and (m := CHECKPOINT_NAME.fullmatch(pointer.read_text().strip())):
        iterations.append(int(m[1]))
    if iterations or pointer.is_file():
        return RunState("resume", max(iterations, default=0))
    return RunState("new")


def read_sweep_json(output: Path) -> dict[str, Any] | None:
    """The sweep.json of an earlier start, or None when there is none or it is unreadable."""
    try:
        return json.loads((output / SWEEP_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_sweep_json(output: Path, record: dict[str, Any]) -> Path:
    """Write ``output/sweep.json`` atomically (readers never see half of it)."""
    path = output / SWEEP_JSON
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return path


def log_tail(folder: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of the run's ``sweep_stdout.txt`` (its od2 train / eval output)."""
    try:
        text = (folder / STDOUT).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None

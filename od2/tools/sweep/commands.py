"""The processes of one sweep run: ``od2 train`` (under torchrun for several GPUs), then ``od2 eval`` of
``model_final.pth`` when training left no final evaluation, and the callable that runs them (locally or as a
submitit job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .folder import FINAL_WEIGHTS, STDOUT, SUMMARY, RunState, log_tail
from .spec import PlannedRun


def od2_command(gpus: int) -> list[str]:
    """The interpreter prefix of an od2 command: this Python, under ``torch.distributed.run`` (torchrun) with one
    process per GPU when ``gpus > 1``."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "od2.cli"]
    return [sys.executable, "-m", "od2.cli"]


def train_command(run: PlannedRun, state: RunState, extra_overrides: tuple[str, ...] = ()) -> list[str]:
    """``od2 train`` of ``run`` (``--resume`` when its folder holds checkpoints)."""
    resume = ["--resume"] if state.kind == "resume" else []
    return [*od2_command(run.arm.processes), "train", *run.config_args, *extra_overrides, *resume]


def eval_command(run: PlannedRun, extra_overrides: tuple[str, ...] = ()) -> list[str]:
    """``od2 eval`` of the run's final weights (the EMA weights with MODEL.EMA, as the trainer's evaluation),
    written to ``<run>/eval/coco_summary.json``. One process: the test set is small next to training."""
    return [*od2_command(1), "eval", *run.config_args, *extra_overrides, "--weights",
            str(run.folder / FINAL_WEIGHTS)]


class RunFailed(RuntimeError):
    """A run's process exited non-zero; the message is the command and the tail of its log."""


@dataclass
class RunJob:
    """Train (or resume) one run, then evaluate it when training wrote no final evaluation; stdout and stderr go
    to ``<folder>/sweep_stdout.txt``. Picklable, so that submitit can run it as a cluster job.

    ``train``: the training command, or None when the folder is already trained. ``env``: variables added to the
    environment (thread counts). ``stop()`` (from another thread, e.g. on Ctrl-C) terminates the running process
    group with SIGTERM: checkpoints are written atomically, so the folder stays resumable.
    """

    folder: Path
    train: list[str] | None
    evaluate: list[str]
    env: dict[str, str] = field(default_factory=dict)
    grace_seconds: float = 30.0

    def __post_init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._stopped = False

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_process",)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._process = None

    def __call__(self) -> float:
        """Run the commands; returns the seconds they took. Raises RunFailed on a non-zero exit."""
        start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        # A summary left by an earlier, unfinished attempt is not this run's final evaluation.
        if self.train is not None:
            (self.folder / SUMMARY).unlink(missing_ok=True)
            self._execute(self.train)
        if not (self.folder / SUMMARY).is_file():
            self._execute(self.evaluate)
        return time.perf_counter() - start

    def stop(self) -> None:
        self._stopped = True
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _execute(self, command: list[str]) -> None:
        if self._stopped:
            raise RunFailed("stopped before it started")
        with (self.folder / STDOUT).open("a") as log:
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            # Its own session: a Ctrl-C in the terminal reaches the sweep, which stops the whole group (the
            # trainer and its data-loading workers) itself.
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, **self.env}, start_new_session=True)
            if self._stopped:  # stop() came between the check above and the start
                self.stop()
            try:
                code = self._process.wait()
            except BaseException:  # the job itself was interrupted (submitit's timeout, Ctrl-C): stop the child
                self.stop()
                self._wait_or_kill()
                raise
            if self._stopped:
                self._wait_or_kill()
        if code != 0:
            raise RunFailed(f"{command[command.index('od2.cli') + 1]} exited with code {code}; "
                            f"the end of {self.folder / STDOUT}:\n{log_tail(self.folder)}")

    def _wait_or_kill(self) -> None:
        try:
            self._process.wait(self.grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

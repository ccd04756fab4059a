"""``od2 sweep``: run every (arm, seed) of a spec that is not done yet, locally or as SLURM jobs through submitit,
keeping ``<output>/sweep.json`` up to date; or, with ``dry_run``, print the plan."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from .commands import RunFailed, RunJob, eval_command, train_command
from .estimate import step_times
from .folder import RunState, log_tail, read_summary, read_sweep_json, run_state, write_sweep_json
from .plan import format_plan
from .spec import PlannedRun, SweepSpec, plan_runs

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class SweepOptions:
    """How to run: ``executor`` local or slurm; ``jobs`` runs at once (local); ``skip_failed`` leaves runs that
    failed before as they are; ``cluster``: submitit's cluster for the slurm executor (``local`` runs the jobs on
    this machine through submitit's local executor, as the tests do)."""

    executor: str = "local"
    jobs: int = 1
    skip_failed: bool = False
    cluster: str = "slurm"
    poll_seconds: float = 2.0


class SweepRecord:
    """sweep.json in memory; every change is written through at once (atomically), from any thread."""

    def __init__(self, spec: SweepSpec, runs: list[PlannedRun], states: dict[str, RunState], skip_failed: bool):
        previous = {entry["dir"]: entry for entry in (read_sweep_json(spec.output) or {}).get("runs", [])}
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        for run in runs:
            before = previous.get(run.relative_dir, {})
            entry = {"arm": run.arm.name, "seed": run.seed, "dir": run.relative_dir, "status": "pending",
                     "error": None, "seconds": None}
            if states[run.relative_dir].kind == "done":
                entry.update(status="done", seconds=before.get("seconds"))
            elif skip_failed and before.get("status") == "failed":
                entry.update(status="failed", error=before.get("error"), seconds=before.get("seconds"))
            self.entries[run.relative_dir] = entry
        self.record = {"spec": spec.as_json(), "spec_file": str(spec.path), "runs": list(self.entries.values())}
        self.output = spec.output
        self.write()

    def update(self, run: PlannedRun, **fields: Any) -> None:
        with self._lock:
            self.entries[run.relative_dir].update(fields)
            self.write()

    def write(self) -> None:
        write_sweep_json(self.output, self.record)

    def status(self, run: PlannedRun) -> str:
        return self.entries[run.relative_dir]["status"]


def previous_statuses(spec: SweepSpec) -> dict[str, str]:
    return {entry["dir"]: entry["status"] for entry in (read_sweep_json(spec.output) or {}).get("runs", [])}


def dry_run(spec: SweepSpec, measure: int = 0, log: Callable[[str], None] = print, jobs: int = 1) -> str:
    """The plan: runs, their state, iterations left and estimated time (docs/sweeps.md, "Dry run"); ``jobs``: the
    local runs at once the wall time is spread over."""
    runs = plan_runs(spec)
    states = {run.relative_dir: run_state(run.folder) for run in runs}
    return format_plan(spec, runs, states, step_times(spec, runs, measure, log), previous_statuses(spec), jobs)


def local_resources(jobs: int, num_workers: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """(environment, overrides) that split this machine's cores between ``jobs`` runs at once: each gets an equal
    share of intra-op threads and of the config's data-loading workers. One job keeps the config as it is."""
    if jobs <= 1:
        return {}, ()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // jobs))
    # The loaders seed every draw from (SEED, draw), so fewer workers give the same batches.
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}, \
        (f"DATALOADER.NUM_WORKERS={num_workers // jobs}",)


def make_job(run: PlannedRun, state: RunState, env: dict[str, str] | None = None,
             overrides: tuple[str, ...] = ()) -> RunJob:
    train = None if state.kind == "evaluate" else train_command(run, state, overrides)
    return RunJob(run.folder, train, eval_command(run, overrides), dict(env or {}))


def finished_line(run: PlannedRun, seconds: float) -> str:
    summary = read_summary(run.folder) or {}
    scores = " ".join(f"{key} {summary[key]:.4f}" for key in ("AP", "AP50") if isinstance(summary.get(key), float))
    return f"{run.relative_dir}: done in {seconds / 60:.1f} min, {scores or 'no summary'}"


class _Stopper:
    """SIGINT / SIGTERM while the sweep runs: stop every running job (their folders stay resumable) and start no
    new one. Handlers are installed only in the main thread (where Python delivers signals)."""

    def __init__(self):
        self.stopped = False
        self._stops: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}

    def add(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.stopped:
            tqdm.write(f"{signal.Signals(signum).name}: stopping the running runs (they stay resumable) ...")
        self.stopped = True
        for stop in list(self._stops):
            stop()


def _run_local(todo: list[tuple[PlannedRun, RunState]], record: SweepRecord, jobs: int, stopper: _Stopper,
               bar: tqdm) -> None:
    def run_one(run: PlannedRun, state: RunState) -> None:
        if stopper.stopped:
            return
        env, overrides = local_resources(jobs, run.num_workers)
        job = make_job(run, state, env, overrides)
        stopper.add(job.stop)
        record.update(run, status="running", error=None)
        try:
            seconds = job()
        except Exception as exc:  # a RunFailed, or the sweep could not start it (an OSError): the others go on
            if job.stopped:
                record.update(run, status="pending")
                return
            error = str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}"
            record.update(run, status="failed", error=error)
            bar.write(f"{run.relative_dir}: FAILED\n{error}")
        else:
            record.update(run, status="done", seconds=round(seconds, 1))
            bar.write(finished_line(run, seconds))
        bar.update()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, run, state) for run, state in todo]
        for future in futures:
            future.result()


def _run_slurm(todo: list[tuple[PlannedRun, RunState]], record: SweepRecord, spec: SweepSpec,
               options: SweepOptions, stopper: _Stopper, bar: tqdm) -> None:
    try:
        import submitit
    except ImportError as exc:
        raise ImportError("od2 sweep --executor slurm needs submitit: pip install 'od2[sweep]'") from exc

    slurm = spec.slurm
    executor = submitit.AutoExecutor(folder=spec.output / "submitit", cluster=options.cluster)
    pending = {}
    for run, state in todo:
        executor.update_parameters(
            name=f"od2-sweep-{run.arm.name}-seed{run.seed}", nodes=1, tasks_per_node=1,
            gpus_per_node=run.arm.gpus_per_run or 0, cpus_per_task=slurm.get("cpus_per_task"),
            timeout_min=slurm.get("timeout_min"), mem_gb=slurm.get("mem_gb"),
            slurm_partition=slurm.get("partition"), slurm_account=slurm.get("account"),
            slurm_qos=slurm.get("qos"), slurm_constraint=slurm.get("constraint"),
            slurm_setup=slurm.get("setup"))
        job = executor.submit(make_job(run, state))
        record.update(run, status="running", error=None, job_id=job.job_id)
        pending[run.relative_dir] = (run, job)
        stopper.add(job.cancel)
    while pending and not stopper.stopped:
        for key, (run, job) in list(pending.items()):
            if not job.done():
                continue
            del pending[key]
            try:
                seconds = job.result()
            except Exception as exc:  # submitit re-raises the job's error (a RunFailed) with its whole traceback
                record.update(run, status="failed", error="\n".join(str(exc).splitlines()[-30:]))
                bar.write(f"{run.relative_dir}: FAILED (job {job.job_id})\n{log_tail(run.folder)}")
            else:
                record.update(run, status="done", seconds=round(seconds, 1))
                bar.write(finished_line(run, seconds))
            bar.update()
        time.sleep(options.poll_seconds if pending else 0)
    for run, _ in pending.values():  # cancelled by a signal: the folders resume on the next start
        record.update(run, status="pending")


def run_sweep(spec: SweepSpec, options: SweepOptions, log: Callable[[str], None] = print) -> int:
    """Run the sweep's runs that are not done; returns the exit code: 0 when every run is done, 1 when any failed,
    130 when a signal stopped it (the stopped runs stay resumable)."""
    runs = plan_runs(spec)
    states = {run.relative_dir: run_state(run.folder) for run in runs}
    spec.output.mkdir(parents=True, exist_ok=True)
    record = SweepRecord(spec, runs, states, options.skip_failed)
    todo = [(run, states[run.relative_dir]) for run in runs if record.status(run) == "pending"]
    done = sum(record.status(run) == "done" for run in runs)
    log(f"sweep {spec.path} -> {spec.output}: {len(runs)} runs, {done} done, {len(todo)} to run"
        + (f" ({len(runs) - done - len(todo)} failed runs left as they are: --skip-failed)"
           if len(runs) - done - len(todo) else "")
        + f", executor {options.executor}" + (f" x{options.jobs}" if options.executor == "local" else ""))
    with _Stopper() as stopper, tqdm(total=len(todo), desc="sweep", unit="run", dynamic_ncols=True) as bar:
        if options.executor == "slurm":
            _run_slurm(todo, record, spec, options, stopper, bar)
        else:
            _run_local(todo, record, options.jobs, stopper, bar)
    statuses = [record.status(run) for run in runs]
    failed = [run for run in runs if record.status(run) == "failed"]
    log(f"sweep: {statuses.count('done')} of {len(runs)} runs done, {len(failed)} failed, "
        f"{statuses.count('pending')} left; record in {spec.output / 'sweep.json'}")
    for run in failed:
        log(f"failed: {run.relative_dir}: {record.entries[run.relative_dir]['error'] or ''}".rstrip())
    if stopper.stopped:
        return EXIT_INTERRUPTED
    return 1 if failed else 0

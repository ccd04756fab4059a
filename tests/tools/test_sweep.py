"""``od2 sweep``: spec checks, the sweep folder contract (sweep.json, <arm>/seed<N>/ with the final evaluation),
resuming, a failing arm, the dry run's estimates, and the SLURM path through submitit's local executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from od2.cli import main
from od2.config import load_config
from od2.data.datasets.digits import ensure_digits
from od2.tools.sweep import SweepOptions, dry_run, load_spec, plan_runs, run_sweep
from od2.tools.sweep.estimate import seconds_per_iteration
from od2.tools.sweep.folder import run_state
from od2.tools.sweep.runner import local_resources
from od2.utils.cfg_node import ConfigError

REPO = Path(__file__).resolve().parents[2]
# A model and data small enough for a few-second training process on 2 cores (tests/engine/test_kill_resume.py's
# settings); datasets named by path so the od2 subprocesses need no registration.
TINY = {
    "MODEL": {"DEVICE": "cpu", "BACKBONE": {"NAME": "efficientnet_lite0", "PRETRAINED": True, "FREEZE_AT": 3},
              "FPN": {"OUT_CHANNELS": 16},
              "RETINANET": {"NUM_CONVS": 1, "NORM": "GN", "IN_FEATURES": ["P3", "P4", "P5"]},
              "ANCHOR_GENERATOR": {"SIZES": [[12, 16, 20], [32, 40, 50], [64, 80, 100]]}},
    "INPUT": {"MIN_SIZE_TRAIN": [64], "MAX_SIZE_TRAIN": 96, "MIN_SIZE_TEST": 64, "MAX_SIZE_TEST": 96},
    "SOLVER": {"IMS_PER_BATCH": 2, "WARMUP_ITERS": 2, "MAX_ITER": 4, "CHECKPOINT_PERIOD": 2},
    "DATALOADER": {"NUM_WORKERS": 0}, "TEST": {"EVAL_PERIOD": 0}, "LOG_PERIOD": 1,
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """The tiny config as a YAML file, training on 24 digits scenes and testing on 8."""
    root = tmp_path_factory.mktemp("sweep_data")
    paths = ensure_digits(root, num_train=24, num_val=8, seed=3)
    config = {**TINY, "DATASETS": {"TRAIN": [f"coco:{paths['train'].json_file}:{paths['train'].image_root}"],
                                   "TEST": [f"coco:{paths['val'].json_file}:{paths['val'].image_root}"]}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_spec(folder: Path, base: Path | str, **entries) -> Path:
    spec = {"base": str(base), "arms": {"base": []}, "seeds": [1], "output": str(folder / "sweep"), **entries}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def od2_sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "od2.cli", "sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- spec checks: each names the spec file and the key --------------------------------------------------------------

@pytest.mark.parametrize(("entries", "key", "problem"), [
    ({"sedes": [1]}, "sedes", "unknown key"),
    ({"arms": {}}, "arms", "non-empty"),
    ({"arms": {"giou": ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE giou"]}}, "arms.giou", "not a KEY=VALUE"),
    ({"arms": {"x": ["SEED=3"]}}, "arms.x", "sets SEED"),
    ({"arms": {"x": {"config": "a.yaml", "overides": []}}}, "arms.x.overides", "did you mean 'overrides'"),
    ({"seeds": [1, 2, 1]}, "seeds", "seed 1 is listed twice"),
    ({"seeds": []}, "seeds", "non-empty list"),
    ({"executor": "slrum"}, "executor", "did you mean 'slurm'"),
    ({"slurm": {"partiton": "gpu"}}, "slurm.partiton", "unknown key"),
])
def test_a_bad_spec_is_an_error_naming_the_file_and_key(tmp_path, tiny_config, entries, key, problem):
    spec = write_spec(tmp_path, tiny_config, **entries)
    with pytest.raises(ConfigError) as error:
        load_spec(spec)
    assert str(error.value).startswith(f"{spec}: {key}: ") and problem in str(error.value), str(error.value)


def test_an_unknown_config_key_of_an_arm_fails_at_plan_time(tmp_path, tiny_config):
    spec = load_spec(write_spec(tmp_path, tiny_config, arms={"base": [], "typo": ["SOLVER.MAX_ITERS=5"]}))
    with pytest.raises(ConfigError) as error:
        plan_runs(spec)
    message = str(error.value)
    assert message.startswith(f"{spec.path}: arms.typo: ") and "SOLVER.MAX_ITERS" in message and "MAX_ITER" in message
    assert not spec.output.exists()  # nothing ran, nothing was written


def test_a_missing_config_file_names_the_key(tmp_path, tiny_config):
    with pytest.raises(ConfigError, match=r"arms\.other\.config"):
        load_spec(write_spec(tmp_path, tiny_config, arms={"other": {"config": str(tmp_path / "missing.yaml")}}))


def test_the_run_plan_orders_overrides_shared_then_arm_then_seed_and_folder(tmp_path, tiny_config):
    spec = load_spec(write_spec(tmp_path, tiny_config, overrides=["SOLVER.MAX_ITER=6", "SOLVER.BASE_LR=0.01"],
                                arms={"base": [], "lr": ["SOLVER.BASE_LR=0.03"]}, seeds=[5, 7]))
    runs = plan_runs(spec)
    assert [(r.arm.name, r.seed, r.relative_dir) for r in runs] == [
        ("base", 5, "base/seed5"), ("base", 7, "base/seed7"), ("lr", 5, "lr/seed5"), ("lr", 7, "lr/seed7")]
    cfg = load_config(runs[3].config_args[1], runs[3].config_args[2:])
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SEED) == (6, 0.03, 7)
    assert Path(cfg.OUTPUT_DIR) == spec.output / "lr" / "seed7" and runs[3].max_iter == 6
    assert spec.reference_arm == "base"


# --- run folder states ----------------------------------------------------------------------------------------------

def test_run_state_reads_the_folder(tmp_path):
    assert run_state(tmp_path).kind == "new"
    (tmp_path / "model_0000002.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    assert (run_state(tmp_path).kind, run_state(tmp_path).iteration) == ("resume", 2)
    (tmp_path / "model_final.pth").write_bytes(b"")
    assert run_state(tmp_path).kind == "evaluate"
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "coco_summary.json").write_text("{}")
    assert run_state(tmp_path).kind == "done"


def test_seconds_per_iteration_leaves_out_start_up_and_resume_gaps(tmp_path):
    records = [{"iteration": 2, "time": 30.0}, {"iteration": 4, "time": 32.0}, {"iteration": 6, "time": 34.5},
               {"iteration": 6, "eval/AP": 0.1},  # an evaluation record: no time
               {"iteration": 8, "time": 20.0},  # a resume restarted the clock: 6 -> 8 is not timed
               {"iteration": 10, "time": 21.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"iteration": 1')
    seconds, iterations = seconds_per_iteration(tmp_path / "metrics.jsonl")
    assert iterations == 6 and seconds == pytest.approx(2.0 + 2.5 + 1.5)


# --- dry run --------------------------------------------------------------------------------------------------------

def test_dry_run_names_each_estimate_source(tmp_path, tiny_config):
    spec = load_spec(write_spec(
        tmp_path, tiny_config, overrides=["SOLVER.MAX_ITER=100"], step_seconds=0.5, step_source="a guess",
        arms={"base": [], "fast": {"overrides": ["SOLVER.BASE_LR=0.01"], "step_seconds": 0.25,
                                   "step_source": "H100 fp32"}, "timed": ["SOLVER.BASE_LR=0.03"]}, seeds=[1, 2]))
    # arm "timed" has a partial run in the sweep folder: 40 iterations done, timed at 2 s per iteration
    partial = spec.output / "timed" / "seed1"
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "time": 5.0 + 2 * i}) + "\n"
                                                   for i in range(10, 41, 10)))
    (partial / "model_0000040.pth").write_bytes(b"")
    (partial / "last_checkpoint").write_text("model_0000040.pth")
    text = dry_run(spec, log=lambda line: None)
    lines = text.splitlines()
    assert lines[3].split()[:4] == ["base", "1", "100", "new"]
    resumed = next(line for line in lines if line.startswith("timed") and line.split()[1] == "1")
    assert resumed.split()[2] == "60" and "resume at iter 40" in resumed and "2.000" in resumed
    assert "base: 0.500 s/iter, spec: a guess" in text
    assert "fast: 0.250 s/iter, spec, arm fast: H100 fp32" in text
    assert "timed: 2.000 s/iter, measured: 30 iterations of this sweep's timed/seed1" in text
    # 200 iterations at 0.5 s, 200 at 0.25 s, 60 + 100 at 2 s: 470 s
    assert "total: 560 iterations to train of 600; estimated 7.8 min" in text
    assert "GPU" not in text  # the spec gives no gpus_per_run
    assert "--jobs" not in text
    assert "with --jobs 2: about 3.9 min of wall time" in dry_run(spec, log=lambda line: None, jobs=2)


@pytest.mark.slow  # trains 3 iterations in a fresh process
def test_dry_run_measure_times_the_arm_here_before_the_specs_figure(tmp_path, tiny_config):
    spec_file = write_spec(tmp_path, tiny_config, overrides=["SOLVER.MAX_ITER=50"], step_seconds=99.0,
                           step_source="a stale figure")
    result = od2_sweep(str(spec_file), "--measure", "3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("  base: "))
    assert "--measure 3: timed here, 2 iterations" in line and "stale" not in line
    seconds = float(line.split()[1])
    assert 0 < seconds < 30
    assert not (tmp_path / "sweep").exists() or not list((tmp_path / "sweep").rglob("*.pth"))  # a temporary folder


def test_dry_run_gives_gpu_hours_when_the_spec_gives_gpus(tmp_path, tiny_config):
    spec = load_spec(write_spec(tmp_path, tiny_config, overrides=["SOLVER.MAX_ITER=3600"], gpus_per_run=2,
                                step_seconds=1.0, arms={"base": [], "one": {"gpus_per_run": 1}}))
    text = dry_run(spec)
    assert [line.split()[-2:] for line in text.splitlines()[3:5]] == [["2", "2.0"], ["1", "1.0"]]
    assert "3.0 GPU-hours" in text


def test_coco_log_dry_run_costs_every_row_of_the_log(capsys):
    """configs/sweeps/coco_log.yaml: the log's 16 rows (rows 6 and 16 hold two runs each), each with its published
    120k iterations and GPU count; loads configs only."""
    assert main(["sweep", str(REPO / "configs/sweeps/coco_log.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("row")]
    assert len(rows) == 18
    assert sorted({line[3:5] for line in rows}) == [f"{k:02d}" for k in range(1, 17)]
    assert all(line.split()[2] == "120000" for line in rows)
    gpus = {line.split()[0]: int(line.split()[-2]) for line in rows}
    assert gpus["row04-gn"] == 3 and gpus["row02-bn-1gpu"] == 1 and gpus["row06-evonorms-2x2"] == 2
    total = next(line for line in lines if line.startswith("total:"))
    total_hours = float(total.split(" GPU-hours")[0].split()[-1])
    assert total_hours == pytest.approx(sum(float(line.split()[-1]) for line in rows), abs=0.1) and total_hours > 10


def test_bccd_ablation_arms_load_and_share_one_budget():
    spec = load_spec(REPO / "configs/sweeps/bccd_ablations.yaml")
    runs = plan_runs(spec)  # loads every arm's config: every key exists and every value is valid
    assert {run.max_iter for run in runs} == {400} and len(spec.seeds) >= 3
    arms = {arm.name for arm in spec.arms}
    assert {"base", "evonorm", "bn", "giou", "piecewise", "stitch", "waa", "bifpn"} <= arms
    for run in runs:
        cfg = load_config(run.config_args[1], run.config_args[2:])
        assert cfg.TEST.EVAL_PERIOD == 0 and cfg.SOLVER.IMS_PER_BATCH == 4


def test_jobs_split_the_cores_and_loader_workers(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert local_resources(1, 4) == ({}, ())  # one run at a time keeps the config and the machine as they are
    assert local_resources(2, 4) == ({"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}, ("DATALOADER.NUM_WORKERS=2",))
    assert local_resources(3, 1) == ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, ("DATALOADER.NUM_WORKERS=0",))
    assert local_resources(16, 2)[0]["OMP_NUM_THREADS"] == "1"


# --- running --------------------------------------------------------------------------------------------------------

def read_record(output: Path) -> dict:
    return json.loads((output / "sweep.json").read_text())


@pytest.mark.slow  # four short training processes and their evaluations
def test_two_arms_two_seeds_make_the_sweep_folder(tmp_path, tiny_config):
    arms = {"base": [], "giou": ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou"]}
    spec_file = write_spec(tmp_path, tiny_config, arms=arms, seeds=[1, 2])
    result = od2_sweep(str(spec_file), "--jobs", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = tmp_path / "sweep"
    record = read_record(output)
    assert record["spec_file"] == str(spec_file.resolve()) and record["spec"]["base"] == str(tiny_config)
    assert [(r["arm"], r["seed"], r["dir"], r["status"]) for r in record["runs"]] == [
        ("base", 1, "base/seed1", "done"), ("base", 2, "base/seed2", "done"),
        ("giou", 1, "giou/seed1", "done"), ("giou", 2, "giou/seed2", "done")]
    for run in record["runs"]:
        folder = output / run["dir"]
        for name in ("config.yaml", "metrics.jsonl", "log.txt", "model_final.pth", "sweep_stdout.txt"):
            assert (folder / name).is_file(), (folder, name)
        summary = json.loads((folder / "eval" / "coco_summary.json").read_text())
        assert summary["num_images"] == 8 and run["seconds"] > 0 and run["error"] is None
        cfg = load_config(folder / "config.yaml")
        assert cfg.SEED == run["seed"] and cfg.DATALOADER.NUM_WORKERS == 0
        assert cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE == ("giou" if run["arm"] == "giou" else "smooth_l1")
    # the seeds differ: the runs are not one run twice
    first = [json.loads(line) for line in (output / "base/seed1/metrics.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (output / "base/seed2/metrics.jsonl").read_text().splitlines()]
    assert first[0]["total_loss"] != second[0]["total_loss"]
    assert "base/seed1: done in" in result.stderr + result.stdout

    again = od2_sweep(str(spec_file))
    assert again.returncode == 0 and "4 done, 0 to run" in again.stdout


def test_a_trained_run_without_its_final_evaluation_is_only_evaluated(tmp_path, tiny_config, monkeypatch):
    """EVAL_PERIOD=0 leaves no evaluation: the sweep runs od2 eval on model_final.pth (here the commands are
    recorded, not run)."""
    spec = load_spec(write_spec(tmp_path, tiny_config))
    folder = spec.output / "base" / "seed1"
    folder.mkdir(parents=True)
    (folder / "model_final.pth").write_bytes(b"")
    commands, popen = [], subprocess.Popen

    def record_and_write(command, **kwargs):
        commands.append(command)
        (folder / "eval").mkdir(exist_ok=True)
        (folder / "eval" / "coco_summary.json").write_text('{"AP": 0.5, "AP50": 0.75}')
        return popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr("od2.tools.sweep.commands.subprocess.Popen", record_and_write)
    assert run_sweep(spec, SweepOptions(), log=lambda line: None) == 0
    assert len(commands) == 1 and commands[0][2:4] == ["od2.cli", "eval"]
    assert commands[0][-2:] == ["--weights", str(folder / "model_final.pth")] and f"OUTPUT_DIR={folder}" in commands[0]
    assert read_record(spec.output)["runs"][0]["status"] == "done"


@pytest.mark.slow  # three training processes
def test_resume_skips_done_runs_resumes_a_partial_one_and_reports_a_failing_arm(tmp_path, tiny_config):
    # a box loss that loads (any string) but that the model builder refuses: it fails at train time
    arms = {"base": [], "broken": ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE=gioux"]}
    spec_file = write_spec(tmp_path, tiny_config, arms=arms, seeds=[1, 2])
    spec = load_spec(spec_file)
    output = spec.output
    # base/seed1: interrupted after its checkpoint at iteration 2: trained with the same arguments to 3, then the
    # final weights removed and the pointer set back, as a kill after iteration 2's checkpoint leaves the folder
    partial = output / "base" / "seed1"
    run = plan_runs(spec)[0]
    first = subprocess.run([sys.executable, "-m", "od2.cli", "train", *run.config_args, "SOLVER.MAX_ITER=3"],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert first.returncode == 0, first.stderr[-2000:]
    (partial / "model_final.pth").unlink()
    (partial / "last_checkpoint").write_text("model_0000002.pth")
    assert run_state(partial).kind == "resume"
    # base/seed2: done already (faked: the sweep must not touch it)
    done = output / "base" / "seed2"
    (done / "eval").mkdir(parents=True)
    (done / "model_final.pth").write_bytes(b"")
    (done / "eval" / "coco_summary.json").write_text('{"AP": 0.25}')

    result = od2_sweep(str(spec_file))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    record = {r["dir"]: r for r in read_record(output)["runs"]}
    assert record["base/seed1"]["status"] == "done" and record["base/seed2"]["status"] == "done"
    assert record["broken/seed1"]["status"] == record["broken/seed2"]["status"] == "failed"
    assert "gioux" in record["broken/seed1"]["error"] and "exited with code 2" in record["broken/seed1"]["error"]
    assert "failed: broken/seed1" in result.stdout
    log = (partial / "sweep_stdout.txt").read_text()
    assert "--resume" in log and "od2.cli eval" in log
    iterations = [json.loads(line)["iteration"] for line in (partial / "metrics.jsonl").read_text().splitlines()
                  if "total_loss" in line]
    assert iterations == [1, 2, 3, 4]  # resumed at 3, not restarted
    assert (done / "model_final.pth").read_bytes() == b""

    skipped = od2_sweep(str(spec_file), "--skip-failed")
    assert skipped.returncode == 1 and "2 failed runs left as they are" in skipped.stdout
    assert "0 to run" in skipped.stdout


@pytest.mark.slow  # a training process stopped by SIGTERM, then resumed
def test_sigterm_stops_the_run_and_leaves_it_resumable(tmp_path, tiny_config):
    spec_file = write_spec(tmp_path, tiny_config, overrides=["SOLVER.MAX_ITER=200", "SOLVER.CHECKPOINT_PERIOD=1"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "od2.cli", "sweep", str(spec_file)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "sweep" / "base" / "seed1"
    deadline = time.monotonic() + 240
    while not (folder / "model_0000002.pth").exists():
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()
        time.sleep(0.2)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, out + err
    assert read_record(tmp_path / "sweep")["runs"][0]["status"] == "pending"
    state = run_state(folder)
    assert state.kind == "resume" and state.iteration >= 2
    plan = od2_sweep(str(spec_file), "--dry-run")
    assert f"resume at iter {state.iteration}" in plan.stdout


@pytest.mark.slow  # one job through submitit's local executor (a fresh process that trains and evaluates)
def test_slurm_executor_through_submitits_local_executor(tmp_path, tiny_config):
    spec_file = write_spec(tmp_path, tiny_config, arms={"base": [], "done": ["SOLVER.BASE_LR=0.01"]},
                           executor="slurm", slurm={"partition": "gpu", "timeout_min": 10, "cpus_per_task": 1})
    done = tmp_path / "sweep" / "done" / "seed1"
    (done / "eval").mkdir(parents=True)
    (done / "model_final.pth").write_bytes(b"")
    (done / "eval" / "coco_summary.json").write_text('{"AP": 0.25}')
    result = od2_sweep(str(spec_file), "--slurm-cluster", "local")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = {r["dir"]: r for r in read_record(tmp_path / "sweep")["runs"]}
    assert record["base/seed1"]["status"] == "done" and "job_id" in record["base/seed1"]
    assert "job_id" not in record["done/seed1"]  # done: not submitted
    assert (tmp_path / "sweep" / "base/seed1/eval/coco_summary.json").is_file()
    submitted = list((tmp_path / "sweep" / "submitit").glob("*_submitted.pkl"))
    assert len(submitted) == 1  # one job: the done run was not resubmitted


@pytest.mark.slow  # two gloo training processes under torchrun, then the evaluation
def test_a_run_with_two_gpus_trains_under_torchrun(tmp_path, tiny_config):
    """gpus_per_run 2 starts one process per GPU through torch.distributed.run (gloo on the CPU here)."""
    from od2.engine.checkpoint import load_checkpoint

    spec_file = write_spec(tmp_path, tiny_config, gpus_per_run=2, overrides=["SOLVER.IMS_PER_BATCH=1"])
    result = od2_sweep(str(spec_file))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "sweep" / "base" / "seed1"
    assert load_checkpoint(folder / "model_final.pth")["world_size"] == 2
    assert "torch.distributed.run --standalone --nproc_per_node=2" in (folder / "sweep_stdout.txt").read_text()
    assert (folder / "eval" / "coco_summary.json").is_file()

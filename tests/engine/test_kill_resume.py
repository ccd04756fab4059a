"""``kill -9`` at five moments of a run, each followed by ``od2 train --resume``, ends with the weights of the run
that was never stopped, bit for bit (CPU, one thread, in-process data loading as the test configs use)."""

from __future__ import annotations

import json
import signal
import sys

import pytest
import torch
from test_train_e2e import REPO, _run, _write_tiny_config, digits_root  # noqa: F401 (digits_root is a fixture)

from od2.engine.checkpoint import load_checkpoint

SETTINGS = ["SOLVER.IMS_PER_BATCH=2", "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=96", "SOLVER.MAX_ITER=8",
            "SOLVER.CHECKPOINT_PERIOD=2"]
# In the order they strike one run folder: before any checkpoint, mid-write of a checkpoint, between a checkpoint
# and its pointer, mid-line of metrics.jsonl, mid-write of model_final.pth (tests/engine/run_killed.py).
MOMENTS = ["step:0", "save:model_0000002.pth", "pointer:model_0000004.pth", "metrics:5", "save:model_final.pth"]


def od2_train(data_root, config, *args: str, moment: str | None = None):
    """``od2 train`` in a subprocess; with ``moment``, SIGKILLed there (tests/engine/run_killed.py)."""
    module = ["-m", "tests.engine.run_killed", str(data_root), moment] if moment else \
        ["-m", "tests.engine.run_registered", str(data_root)]
    return _run([sys.executable, *module, "train", "--config", str(config), *args], REPO, timeout=300)


def training_losses(run) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(m["iteration"], m["total_loss"]) for m in map(json.loads, lines) if "total_loss" in m]


@pytest.mark.slow  # seven short training processes (about 30 s on 2 cores)
def test_kill_9_at_five_moments_then_resume_gives_the_same_weights_bit_for_bit(digits_root, tmp_path):  # noqa: F811
    straight = _write_tiny_config(tmp_path / "straight.yaml", tmp_path / "straight", SETTINGS)
    result = od2_train(digits_root, straight)
    assert result.returncode == 0, result.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    killed = _write_tiny_config(tmp_path / "killed.yaml", killed_dir, SETTINGS)
    for moment in MOMENTS:
        result = od2_train(digits_root, killed, "--resume", moment=moment)
        assert result.returncode == -signal.SIGKILL, (moment, result.stderr[-3000:])
        if moment.startswith("save:"):  # the kill left half a checkpoint behind, which the resume removes
            assert list(killed_dir.glob(f".{moment[5:]}.*.tmp")), moment
    assert not (killed_dir / "model_final.pth").exists()
    result = od2_train(digits_root, killed, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(killed_dir.glob(".*.tmp"))

    a, b = load_checkpoint(tmp_path / "straight" / "model_final.pth"), load_checkpoint(killed_dir / "model_final.pth")
    assert a["iteration"] == b["iteration"] == 8
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(b["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"]), index
    # metrics.jsonl: each iteration once, with the straight run's losses (the torn line and replays dropped)
    assert training_losses(killed_dir) == training_losses(tmp_path / "straight")

"""A run folder under faults: a dangling or unreadable ``last_checkpoint``, a non-finite loss, a failed resume,
training into a folder that holds a run, write failures and the temp files of killed saves."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from test_hooks import QUICK
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.config import load_config
from od2.engine.checkpoint import load_checkpoint
from od2.engine.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.usefixtures("digits_root")


def train_three_with_checkpoints(run):
    """3 iterations with checkpoints after 1 and 2 (and model_final.pth): the folder the faults start from."""
    cfg = tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=3", "SOLVER.CHECKPOINT_PERIOD=1")
    Trainer(cfg).train()
    return cfg


@pytest.mark.slow  # two training runs; the unreadable-pointer test keeps the fallback in the quick suite
def test_a_dangling_last_checkpoint_resumes_from_the_newest_readable_one(tmp_path, caplog):
    cfg = train_three_with_checkpoints(tmp_path)
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "model_0000002.pth").unlink()  # last_checkpoint still names model_final.pth
    kept = load_checkpoint(tmp_path / "model_0000001.pth")["model"]
    trainer = Trainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume=True)
    assert trainer.start_iter == 1
    assert "model_final.pth" in caplog.text and "model_0000001.pth" in caplog.text  # which file, and why
    assert load_checkpoint(tmp_path / "model_final.pth")["iteration"] == 3
    for key, value in load_checkpoint(tmp_path / "model_0000001.pth")["model"].items():
        assert torch.equal(value, kept[key]), key


def test_an_unreadable_last_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    cfg = train_three_with_checkpoints(tmp_path)
    final = tmp_path / "model_final.pth"
    final.write_bytes(final.read_bytes()[:1000])  # a truncated file
    trainer = Trainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume=True)
    assert trainer.start_iter == 2
    assert "cannot read" in caplog.text and "model_0000002.pth" in caplog.text


def test_a_dangling_last_checkpoint_without_a_readable_checkpoint_stops(tmp_path):
    cfg = train_three_with_checkpoints(tmp_path)
    for name in ("model_final.pth", "model_0000002.pth"):
        (tmp_path / name).unlink()
    (tmp_path / "model_0000001.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="no readable checkpoint") as raised:
        Trainer(cfg).train(resume=True)
    assert "model_final.pth" in str(raised.value) and "model_0000001.pth" in str(raised.value)
    assert (tmp_path / "model_0000001.pth").read_bytes() == b"not a checkpoint"  # nothing overwritten


@pytest.mark.slow  # two training runs of up to 6 steps; test_hooks' non-finite test keeps the pointer check quick
def test_a_non_finite_loss_keeps_last_checkpoint_on_a_good_state_and_its_advice_works(tmp_path):
    # From iteration 2 the learning rate is 0.02 * 1e8: the update of step 2 blows the weights up, and the loss of a
    # later step is not finite. The checkpoint after step 2 already holds the blown-up weights.
    blowing_up = [*QUICK, "SOLVER.WARMUP_ITERS=0", "SOLVER.LR_DECAY_TYPE=piecewise", "SOLVER.STEPS=[2]",
                  "SOLVER.MAX_ITER=6", "SOLVER.CHECKPOINT_PERIOD=1"]
    with pytest.raises(NonFiniteLossError) as raised:
        Trainer(tiny_cfg(tmp_path, *blowing_up, "SOLVER.GAMMA=1e8")).train()
    failed = raised.value.iteration
    assert 2 < failed < 6
    assert (tmp_path / f"model_nonfinite_{failed:07d}.pth").is_file()
    # The checkpoint after step failed - 1 holds the weights whose loss was not finite: not one to resume from.
    good = f"model_{failed - 1:07d}.pth"
    assert (tmp_path / "last_checkpoint").read_text() == good
    assert not (tmp_path / f"model_{failed:07d}.pth").exists()
    message = str(raised.value)
    assert good in message and "--resume" in message and f"model_nonfinite_{failed:07d}.pth" in message
    # The advice: change the config, then --resume.
    trainer = Trainer(tiny_cfg(tmp_path, *blowing_up, "SOLVER.GAMMA=0.1"))
    trainer.train(resume=True)
    assert trainer.start_iter == failed - 1
    assert load_checkpoint(tmp_path / "model_final.pth")["iteration"] == 6


def test_a_failed_resume_leaves_the_run_record_and_each_start_keeps_its_config(tmp_path, monkeypatch, capsys):
    from od2.cli import main

    run, config = tmp_path / "run", tmp_path / "cfg.yaml"
    config.write_text(tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=1").dump())
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    assert main(["train", "--config", str(config)]) == 0
    record = {name: (run / name).read_text() for name in ("config.yaml", "run.json")}
    assert [re.fullmatch(r"config_\d{8}-\d{6}(_\d+)?\.yaml", p.name) is not None
            for p in (run / "configs").iterdir()] == [True]
    assert load_config(next((run / "configs").iterdir())) == load_config(run / "config.yaml")

    # a resume with another model's config fails (one line, exit code 1)
    assert main(["train", "--config", str(config), "--resume", "MODEL.FPN.OUT_CHANNELS=16", "SOLVER.MAX_ITER=2"]) == 1
    assert "size mismatch" in capsys.readouterr().err
    assert {name: (run / name).read_text() for name in record} == record
    assert len(list((run / "configs").iterdir())) == 1

    assert main(["train", "--config", str(config), "--resume", "SOLVER.MAX_ITER=2"]) == 0
    assert load_config(run / "config.yaml").SOLVER.MAX_ITER == 2  # config.yaml: the latest start's config
    starts = sorted((run / "configs").iterdir())
    assert [load_config(p).SOLVER.MAX_ITER for p in starts] == [1, 2]  # one config per start, in order
    assert (run / "run.json").read_text() == record["run.json"]  # run.json: how the run was first started


@pytest.mark.slow  # two training runs
def test_training_into_a_folder_with_checkpoints_needs_resume_or_overwrite(tmp_path, monkeypatch, capsys):
    from od2.cli import main, parse_args

    run, config = tmp_path / "run", tmp_path / "cfg.yaml"
    cfg = tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=2", "SOLVER.CHECKPOINT_PERIOD=1")
    Trainer(cfg).train()
    before = {p.name: p.read_bytes() for p in run.glob("model_*.pth")}
    config.write_text(cfg.dump())
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(run) in error and "--resume" in error and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in run.glob("model_*.pth")} == before  # nothing overwritten
    assert parse_args(["train", "--config", str(config), "--overwrite"]).overwrite

    # Starting afresh on purpose: the old run's checkpoints and metrics go, the new run's alone are left.
    Trainer(tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=1")).train(overwrite=True)
    assert sorted(p.name for p in run.glob("model_*.pth")) == ["model_final.pth"]
    assert [m["iteration"] for m in read_metrics(run)] == [1]
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        Trainer(cfg).train(resume=True, overwrite=True)


def test_a_resume_drops_the_metrics_of_the_replayed_iterations_and_temporaries_of_killed_saves(tmp_path):
    cfg = train_three_with_checkpoints(tmp_path)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 4, "total_lo')  # the torn last line of a killed run
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    killed_save = tmp_path / ".model_0000002.pth.999999999-0a1b2c3d.tmp"  # atomic_write's naming, no such process
    killed_save.write_bytes(b"half a checkpoint")
    Trainer(cfg).train(resume=True)
    assert [m["iteration"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert not killed_save.exists()

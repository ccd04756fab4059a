"""A run folder under faults: a dangling or unreadable ``last_checkpoint``, a non-finite loss, a failed resume,
training into a folder that holds a run, write failures and the temp files of killed saves."""

from __future__ import annotations

import logging

import pytest
import torch
from test_hooks import QUICK
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.engine.checkpoint import load_checkpoint
from od2.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("digits_root")


def train_six_with_checkpoints(run):
    """6 iterations with checkpoints after 2 and 4 (and model_final.pth): the folder the faults start from."""
    cfg = tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=6", "SOLVER.CHECKPOINT_PERIOD=2")
    Trainer(cfg).train()
    return cfg


def test_a_dangling_last_checkpoint_resumes_from_the_newest_readable_one(tmp_path, caplog):
    cfg = train_six_with_checkpoints(tmp_path)
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "model_0000004.pth").unlink()  # last_checkpoint still names model_final.pth
    kept = load_checkpoint(tmp_path / "model_0000002.pth")["model"]
    trainer = Trainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume=True)
    assert trainer.start_iter == 2
    assert "model_final.pth" in caplog.text and "model_0000002.pth" in caplog.text  # which file, and why
    assert load_checkpoint(tmp_path / "model_final.pth")["iteration"] == 6
    for key, value in load_checkpoint(tmp_path / "model_0000002.pth")["model"].items():
        assert torch.equal(value, kept[key]), key


def test_an_unreadable_last_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    cfg = train_six_with_checkpoints(tmp_path)
    final = tmp_path / "model_final.pth"
    final.write_bytes(final.read_bytes()[:1000])  # a truncated file
    trainer = Trainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume=True)
    assert trainer.start_iter == 4
    assert "cannot read" in caplog.text and "model_0000004.pth" in caplog.text


def test_a_dangling_last_checkpoint_without_a_readable_checkpoint_stops(tmp_path):
    cfg = train_six_with_checkpoints(tmp_path)
    for name in ("model_final.pth", "model_0000004.pth"):
        (tmp_path / name).unlink()
    (tmp_path / "model_0000002.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="no readable checkpoint") as raised:
        Trainer(cfg).train(resume=True)
    assert "model_final.pth" in str(raised.value) and "model_0000002.pth" in str(raised.value)
    assert (tmp_path / "model_0000002.pth").read_bytes() == b"not a checkpoint"  # nothing overwritten

"""TEST.VAL_LOSS: evaluations log eval/loss_* beside AP, and training is bit-identical with and without them."""

from __future__ import annotations

import pytest
import torch
from test_hooks import QUICK
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.engine.checkpoint import load_checkpoint
from od2.engine.trainer import Trainer
from od2.evaluation.evaluate import build_evaluator


@pytest.mark.slow  # two runs with two COCO evaluations each
def test_validation_loss_is_logged_and_does_not_change_training(digits_root, tmp_path):  # noqa: F811
    finals = {}
    for val_loss in (True, False):
        run = tmp_path / str(val_loss)
        # BN in the head: running statistics that a forward in training mode would move
        cfg = tiny_cfg(run, *QUICK, "INPUT.MIN_SIZE_TEST=64", "INPUT.MAX_SIZE_TEST=96", "SOLVER.MAX_ITER=4",
                       "TEST.EVAL_PERIOD=2", "MODEL.RETINANET.NORM=BN", f"TEST.VAL_LOSS={val_loss}")
        Trainer(cfg, evaluator=build_evaluator(cfg)).train()
        finals[val_loss] = load_checkpoint(run / "model_final.pth")["model"]
        evaluations = [m for m in read_metrics(run) if "eval/AP" in m]
        assert len(evaluations) == 2
        has_losses = [{"eval/loss_cls", "eval/loss_box_reg", "eval/total_loss"} <= set(m) for m in evaluations]
        assert has_losses == [val_loss, val_loss]
        if val_loss:
            assert all(m["eval/loss_cls"] > 0 and m["eval/total_loss"] > m["eval/loss_cls"] for m in evaluations)
    assert finals[True].keys() == finals[False].keys()
    assert all(torch.equal(finals[True][k], finals[False][k]) for k in finals[True])

"""The trainer's hooks: the documented call order, a hook's state through a checkpoint and a resume, the evaluator the
caller passes in, clear errors, and od2.engine not importing od2.evaluation."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn as nn
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.engine.checkpoint import load_checkpoint
from od2.engine.ema import ModelEMA
from od2.engine.hooks import EMAHook, HookBase, merge_checkpoint_states
from od2.engine.trainer import NonFiniteLossError, Trainer

# Smaller images and batches than the e2e tests: these tests count calls, not accuracy.
QUICK = ["SOLVER.IMS_PER_BATCH=2", "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=96"]
SUMMARY = {"AP": 0.25, "AP50": 0.5}


class RecordingHook(HookBase):
    """Records every call, and counts steps and evaluations as checkpoint state."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.steps = self.evaluations = 0

    def before_train(self):
        self.calls.append(("before_train", self.trainer.start_iter))

    def before_step(self, iteration):
        self.calls.append(("before_step", iteration))

    def after_step(self, iteration, losses):
        self.calls.append(("after_step", iteration))
        self.steps += 1
        assert "total_loss" in losses

    def after_evaluation(self, iteration, summary):
        self.calls.append(("after_evaluation", iteration, summary))
        self.evaluations += 1

    def on_exception(self, iteration, error):
        self.calls.append(("on_exception", iteration, type(error)))

    def after_train(self):
        self.calls.append(("after_train",))

    def state_dict(self):
        return {"test_steps": self.steps, "test_evaluations": self.evaluations}

    def load_state_dict(self, checkpoint):
        self.steps, self.evaluations = checkpoint["test_steps"], checkpoint["test_evaluations"]


class RecordingEvaluator:
    """An evaluator as the caller passes it: model -> summary; records the model it gets and its mode."""

    def __init__(self):
        self.seen: list[tuple[torch.nn.Module, bool]] = []

    def __call__(self, model):
        self.seen.append((model, model.training))
        return dict(SUMMARY)


def test_hooks_are_called_in_the_documented_order(digits_root, tmp_path):  # noqa: F811
    hook, evaluator = RecordingHook(), RecordingEvaluator()
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=3", "TEST.EVAL_PERIOD=2", "SOLVER.CHECKPOINT_PERIOD=2")
    trainer = Trainer(cfg, evaluator=evaluator, hooks=[hook])
    assert trainer.train() == SUMMARY  # the last evaluation's summary
    # evaluations after 2 steps (the period) and after the last step
    assert hook.calls == [
        ("before_train", 0),
        ("before_step", 0), ("after_step", 0),
        ("before_step", 1), ("after_step", 1), ("after_evaluation", 1, SUMMARY),
        ("before_step", 2), ("after_step", 2), ("after_evaluation", 2, SUMMARY),
        ("after_train",),
    ]
    assert [model is trainer.bare_model for model, _ in evaluator.seen] == [True, True]  # no EMA: the raw weights
    assert trainer.model.training  # back in training mode after the evaluations
    # The checkpoint of step 2 is written after that step's evaluation, so it holds the state the evaluation changed.
    saved = load_checkpoint(tmp_path / "model_0000002.pth")
    assert (saved["test_steps"], saved["test_evaluations"]) == (2, 1)
    assert [m["iteration"] for m in read_metrics(tmp_path) if "eval/AP" in m] == [2, 3]
    with pytest.raises(RuntimeError, match="restore the feed before training"):
        trainer.feed.load_state_dict({"iteration": 0})


def test_hook_state_round_trips_through_checkpoint_and_resume(digits_root, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=4", "TEST.EVAL_PERIOD=2", "SOLVER.CHECKPOINT_PERIOD=2")
    Trainer(cfg, evaluator=RecordingEvaluator(), hooks=[RecordingHook()]).train()
    # A crash after the iteration-2 checkpoint: a new run with a new hook resumes from it.
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    hook = RecordingHook()
    Trainer(cfg, evaluator=RecordingEvaluator(), hooks=[hook]).train(resume=True)
    assert hook.calls[0] == ("before_train", 2)
    assert (hook.steps, hook.evaluations) == (4, 2)  # 2 + 2 steps, evaluations after steps 2 and 4
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert (final["iteration"], final["test_steps"], final["test_evaluations"]) == (4, 4, 2)


def test_a_non_finite_loss_reaches_on_exception_then_after_train(digits_root, tmp_path, monkeypatch):  # noqa: F811
    hook = RecordingHook()
    trainer = Trainer(tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=3"), hooks=[hook])
    real_forward = trainer.model.forward
    calls = {"n": 0}

    def forward_that_explodes(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        return {**out, "loss_cls": out["loss_cls"] * float("nan")} if calls["n"] == 2 else out

    monkeypatch.setattr(trainer.model, "forward", forward_that_explodes)
    with pytest.raises(NonFiniteLossError, match="iteration 1") as raised:
        trainer.train()
    assert hook.calls[-3:] == [("before_step", 1), ("on_exception", 1, NonFiniteLossError), ("after_train",)]
    path = tmp_path / "model_nonfinite_0000001.pth"
    assert str(path) in str(raised.value)  # the message says where the state is
    saved = load_checkpoint(path)
    assert (saved["iteration"], saved["test_steps"]) == (1, 1)  # the state before the failed step
    assert not (tmp_path / "last_checkpoint").exists()  # --resume must not start from the weights that gave the loss


def test_od2_train_passes_the_coco_evaluator(digits_root, tmp_path, monkeypatch):  # noqa: F811
    from od2.cli import main

    run = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(tiny_cfg(run, *QUICK, "SOLVER.MAX_ITER=2", "TEST.EVAL_PERIOD=2", "INPUT.MIN_SIZE_TEST=64",
                               "INPUT.MAX_SIZE_TEST=96").dump())
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    assert main(["train", "--config", str(config)]) == 0
    summary = json.loads((run / "eval" / "coco_summary.json").read_text())
    assert summary["num_images"] == 40 and summary["dataset"] == "e2e_digits_val"
    evaluations = [m for m in read_metrics(run) if "eval/AP" in m]
    assert [m["iteration"] for m in evaluations] == [2] and evaluations[0]["eval/AP"] == summary["AP"]


def test_bad_trainer_arguments_are_clear_errors(digits_root, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match=r"TEST.EVAL_PERIOD=2 .*evaluator=.*TEST.EVAL_PERIOD=0"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "TEST.EVAL_PERIOD=2"))
    with pytest.raises(TypeError, match="must subclass od2.engine.hooks.HookBase, got RecordingEvaluator"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "TEST.EVAL_PERIOD=2", "DATASETS.TEST=[]"), hooks=[RecordingEvaluator()])


def test_ema_hook_restarts_from_the_resumed_weights_without_ema_in_the_checkpoint(caplog):
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9)
    hook = EMAHook(ema, model)
    hook.after_step(0, {})
    assert ema.updates == 1
    with torch.no_grad():
        model.weight.fill_(5.0)  # the resumed weights
    with caplog.at_level(logging.WARNING, logger="od2.engine.hooks.training"):
        hook.load_state_dict({"iteration": 3})
    assert ema.updates == 0 and torch.equal(ema.module.weight, torch.full((2, 2), 5.0))
    assert "restarts from the resumed weights" in caplog.text
    hook.load_state_dict({"ema": {"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, "ema_updates": 7})
    assert ema.updates == 7 and torch.equal(ema.module.weight, torch.ones(2, 2))


def test_checkpoint_keys_of_two_hooks_must_differ():
    class EMALike(HookBase):
        def state_dict(self):
            return {"ema_updates": 1}

    assert merge_checkpoint_states({"model": 1}, [HookBase(), RecordingHook()]) == {
        "model": 1, "test_steps": 0, "test_evaluations": 0}
    with pytest.raises(ValueError, match="EMALike and EMALike both write the checkpoint entry 'ema_updates'"):
        merge_checkpoint_states({"model": 1}, [EMALike(), EMALike()])
    with pytest.raises(ValueError, match="Bad and the trainer both write the checkpoint entry 'model'"):
        merge_checkpoint_states({"model": 1}, [type("Bad", (HookBase,), {"state_dict": lambda self: {"model": 2}})()])
    with pytest.raises(ValueError, match="EMALike and the trainer both write the checkpoint entry 'ema_updates'"):
        merge_checkpoint_states({}, [EMALike()], reserved=["ema_updates"])


def test_clashing_hook_keys_stop_training_before_the_first_step(digits_root, tmp_path):  # noqa: F811
    class Counter(HookBase):
        def state_dict(self):
            return {"count": 0}

    hook = RecordingHook()
    with pytest.raises(ValueError, match="Counter and Counter both write the checkpoint entry 'count'"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=2"), hooks=[hook, Counter(), Counter()]).train()
    assert ("before_step", 0) not in hook.calls and not list(tmp_path.glob("*.pth"))

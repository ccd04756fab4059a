"""model_best.pth by TEST.BEST_METRIC, its record through --resume, and early stopping (SOLVER.PATIENCE)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_hooks import QUICK
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.config import ConfigError
from od2.engine.checkpoint import load_checkpoint
from od2.engine.hooks import BestCheckpointer
from od2.engine.trainer import Trainer


class ScriptedEvaluator:
    """Returns the next of ``values`` as the summary's AP (and a loss that moves the other way) at each call."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, model):
        ap = self.values.pop(0)
        return {"AP": ap, "AP50": 2 * ap, "loss_cls": 1.0 - ap}


def weights_of(path):
    return load_checkpoint(path)["model"]


def test_model_best_holds_the_weights_of_the_best_evaluation(digits_root, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=6", "TEST.EVAL_PERIOD=2", "SOLVER.CHECKPOINT_PERIOD=2")
    Trainer(cfg, evaluator=ScriptedEvaluator([0.2, 0.5, 0.3])).train()
    best = load_checkpoint(tmp_path / "model_best.pth")
    assert best["iteration"] == 4
    assert best["best_metric"] == {"metric": "AP", "mode": "max", "value": 0.5, "iteration": 4,
                                   "evaluations_since_best": 0}
    periodic = weights_of(tmp_path / "model_0000004.pth")
    assert all(torch.equal(best["model"][k], periodic[k]) for k in periodic)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"  # model_best is not resumed from
    assert load_checkpoint(tmp_path / "model_final.pth")["best_metric"]["evaluations_since_best"] == 1


def test_a_lower_better_metric_keeps_the_lowest(digits_root, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=4", "TEST.EVAL_PERIOD=2", "TEST.BEST_METRIC=loss_cls")
    Trainer(cfg, evaluator=ScriptedEvaluator([0.2, 0.1])).train()  # loss_cls 0.8 then 0.9
    record = load_checkpoint(tmp_path / "model_best.pth")["best_metric"]
    assert (record["mode"], record["value"], record["iteration"]) == ("min", 0.8, 2)


def test_resume_keeps_the_best_and_does_not_overwrite_it_with_a_worse_one(digits_root, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=6", "TEST.EVAL_PERIOD=2", "SOLVER.CHECKPOINT_PERIOD=2")
    Trainer(cfg, evaluator=ScriptedEvaluator([0.2, 0.5, 0.1])).train()
    (tmp_path / "model_final.pth").unlink()  # a crash after the iteration-4 checkpoint
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    best_bytes = (tmp_path / "model_best.pth").read_bytes()
    Trainer(cfg, evaluator=ScriptedEvaluator([0.4])).train(resume=True)  # better than 0.2, worse than 0.5
    assert (tmp_path / "model_best.pth").read_bytes() == best_bytes
    assert load_checkpoint(tmp_path / "model_final.pth")["best_metric"]["value"] == 0.5
    Trainer(tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=8", "TEST.EVAL_PERIOD=2"),
            evaluator=ScriptedEvaluator([0.6])).train(resume=True)
    assert load_checkpoint(tmp_path / "model_best.pth")["best_metric"]["iteration"] == 8


def test_patience_stops_early_and_still_writes_the_final_checkpoint(digits_root, tmp_path, caplog):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=20", "TEST.EVAL_PERIOD=2", "SOLVER.PATIENCE=2")
    with caplog.at_level(logging.WARNING, logger="od2.engine.trainer"):
        summary = Trainer(cfg, evaluator=ScriptedEvaluator([0.3, 0.4, 0.4, 0.35, 0.9])).train()
    assert summary["AP"] == 0.35  # the evaluation after 8 steps was the last: the tie at 6 and 8 exhaust 2
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["iteration"] == 8 and final["best_metric"]["iteration"] == 4
    assert "early stopping (SOLVER.PATIENCE=2): AP has not improved for 2 evaluations" in caplog.text
    assert [m["iteration"] for m in read_metrics(tmp_path) if "eval/AP" in m] == [2, 4, 6, 8]
    assert max(m["iteration"] for m in read_metrics(tmp_path)) == 8


def test_an_unknown_metric_names_the_summary_keys(digits_root, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=2", "TEST.EVAL_PERIOD=2", "TEST.BEST_METRIC=mAP")
    with pytest.raises(ConfigError, match=r"TEST.BEST_METRIC='mAP' is not in .*\['AP', 'AP50', 'loss_cls'\]"):
        Trainer(cfg, evaluator=ScriptedEvaluator([0.3])).train()


def test_bad_best_settings_are_config_errors(digits_root, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="TEST.BEST_MODE 'maximum' is not one of .*did you mean 'max'"):
        BestCheckpointer("AP", "maximum")
    with pytest.raises(ConfigError, match="SOLVER.PATIENCE=3 .*no evaluations"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "SOLVER.MAX_ITER=2", "SOLVER.PATIENCE=3"))
    with pytest.raises(ConfigError, match="SOLVER.PATIENCE"):
        tiny_cfg(tmp_path, "SOLVER.PATIENCE=-1")


SMALL_TEST = ["INPUT.MIN_SIZE_TEST=64", "INPUT.MAX_SIZE_TEST=96"]


@pytest.mark.slow  # three COCO evaluations and od2 eval
def test_a_digits_run_keeps_the_best_of_metrics_jsonl_and_od2_eval_reads_it(digits_root, tmp_path,  # noqa: F811
                                                                            monkeypatch):
    from od2.cli import main
    from od2.evaluation.evaluate import build_evaluator

    run = tmp_path / "run"
    cfg = tiny_cfg(run, *QUICK, *SMALL_TEST, "SOLVER.MAX_ITER=6", "TEST.EVAL_PERIOD=2")
    Trainer(cfg, evaluator=build_evaluator(cfg)).train()
    evaluations = [m for m in read_metrics(run) if "eval/AP" in m]
    assert len(evaluations) == 3
    best_ap = max(m["eval/AP"] for m in evaluations)
    record = load_checkpoint(run / "model_best.pth")["best_metric"]
    assert record["value"] == best_ap
    assert record["iteration"] == next(m["iteration"] for m in evaluations if m["eval/AP"] == best_ap)
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    assert main(["eval", "--config", str(config), "--weights", str(run / "model_best.pth")]) == 0
    assert json.loads((run / "eval" / "coco_summary.json").read_text())["AP"] == pytest.approx(best_ap, abs=1e-6)


@pytest.mark.slow  # three COCO evaluations
def test_a_run_whose_learning_rate_is_zero_stops_early(digits_root, tmp_path):  # noqa: F811
    from od2.evaluation.evaluate import build_evaluator

    cfg = tiny_cfg(tmp_path, *QUICK, *SMALL_TEST, "SOLVER.MAX_ITER=40", "TEST.EVAL_PERIOD=2", "SOLVER.PATIENCE=2",
                   "SOLVER.BASE_LR=0.0")
    Trainer(cfg, evaluator=build_evaluator(cfg)).train()
    assert load_checkpoint(tmp_path / "model_final.pth")["iteration"] == 6  # best at 2, no better at 4 and 6
    assert [m["iteration"] for m in read_metrics(tmp_path) if "eval/AP" in m] == [2, 4, 6]

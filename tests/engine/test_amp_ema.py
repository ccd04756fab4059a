"""EMA of weights (closed forms, buffers, state round trip, trainer resume/eval/checkpoints) and mixed precision
(bf16 and fp16 autocast on CPU, GradScaler skipping and checkpointing, bad SOLVER.AMP values)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.cli import main
from od2.config import ConfigError
from od2.engine.checkpoint import load_checkpoint, load_model_weights, save_training_checkpoint
from od2.engine.ema import ModelEMA
from od2.engine.trainer import Trainer, amp_dtype

# ---------------------------------------------------------------- ModelEMA


def toy(fill: float, tracked: int = 0) -> nn.Module:
    """Linear(2, 2) + BatchNorm1d(2) with every floating entry equal to ``fill``."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for value in model.state_dict().values():
            value.fill_(tracked if not value.is_floating_point() else fill)
    return model


@pytest.mark.parametrize("warmup,decay,k", [(False, 0.9, 7), (True, 0.9999, 5), (True, 0.5, 12)])
def test_ema_matches_the_closed_form(warmup, decay, k):
    ema = ModelEMA(toy(1.0), decay=decay, warmup=warmup)
    target = toy(3.0, tracked=7)  # constant weights: ema_k = w + (w0 - w) * prod(d_0 .. d_{k-1})
    for _ in range(k):
        ema.update(target)
    if not warmup:
        product = decay ** k
    else:  # d_n = min(decay, (1 + n) / (10 + n)); below the cap the product telescopes to k! 9! / (k + 9)!
        ramp = [n for n in range(k) if (1 + n) / (10 + n) < decay]
        product = math.factorial(len(ramp)) * math.factorial(9) / math.factorial(len(ramp) + 9)
        product *= decay ** (k - len(ramp))
    expected = 3.0 + (1.0 - 3.0) * product
    state = ema.module.state_dict()
    assert ema.updates == k
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):  # buffers too
        torch.testing.assert_close(state[key], torch.full_like(state[key], expected), rtol=0, atol=1e-6)
    assert state["1.num_batches_tracked"].item() == 7  # integer buffers are copied


def test_ema_module_is_a_frozen_copy_in_eval_mode():
    model = toy(1.0)
    ema = ModelEMA(model, decay=0.9)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.fill_(5.0)
    assert torch.all(ema.module[0].weight == 1.0)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.9
    with pytest.raises(ValueError, match="MODEL.EMA.DECAY"):
        ModelEMA(model, decay=1.0)


def test_ema_state_dict_round_trip():
    ema = ModelEMA(toy(1.0), decay=0.9)
    for fill in (2.0, 4.0, 8.0):
        ema.update(toy(fill, tracked=int(fill)))
    state = ema.state_dict()
    assert set(state) == {"ema", "ema_updates"} and state["ema_updates"] == 3
    other = ModelEMA(toy(-1.0), decay=0.9)
    other.load_state_dict(state)
    assert other.updates == 3
    for key, value in ema.module.state_dict().items():
        assert torch.equal(other.module.state_dict()[key], value), key
    ema.update(toy(0.5))
    other.update(toy(0.5))  # continues exactly: same count, same decay, same tensors updated in place
    for key, value in ema.module.state_dict().items():
        assert torch.equal(other.module.state_dict()[key], value), key


def test_load_model_weights_prefers_ema(tmp_path, caplog):
    model = toy(1.0)
    ema = ModelEMA(model, decay=0.9)
    ema.update(toy(2.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_training_checkpoint(tmp_path, "m.pth", model, opt, 1, **ema.state_dict())
    target = toy(0.0)
    caplog.set_level(logging.INFO, logger="od2.engine.checkpoint")
    load_model_weights(target, path, require_all=True)
    assert torch.equal(target[0].weight, ema.module[0].weight) and not torch.equal(target[0].weight, model[0].weight)
    assert "loaded the EMA weights (after 1 updates)" in caplog.text
    load_model_weights(target, path, prefer_ema=False)
    assert torch.equal(target[0].weight, model[0].weight)
    assert "loaded the raw weights" in caplog.text


# ---------------------------------------------------------------- Trainer with EMA

EMA = ["MODEL.EMA.ENABLED=true", "MODEL.EMA.DECAY=0.9", "SOLVER.MAX_ITER=6", "TEST.EVAL_PERIOD=3"]


def spy_evaluator(seen: list[nn.Module]):
    """An evaluator for Trainer(evaluator=...) that records the module it gets in ``seen``."""

    def fake_evaluate(model):
        seen.append(model)
        return {key: 0.0 for key in ("AP", "AP50", "AP75", "APs", "APm", "APl")}

    return fake_evaluate


@pytest.mark.slow  # three training runs with evaluations and checkpoints
def test_trainer_ema_resume_eval_and_checkpoint(digits_root, tmp_path):  # noqa: F811
    seen: list[nn.Module] = []
    straight, split = tmp_path / "straight", tmp_path / "split"
    trainer = Trainer(tiny_cfg(straight, *EMA), evaluator=spy_evaluator(seen))
    trainer.train()
    assert len(seen) == 2 and all(model is trainer.ema.module for model in seen)  # iterations 3 and 6
    Trainer(tiny_cfg(split, *EMA, "SOLVER.CHECKPOINT_PERIOD=3"), evaluator=spy_evaluator([])).train()
    (split / "model_final.pth").unlink()  # a crash after the iteration-3 checkpoint
    (split / "last_checkpoint").write_text("model_0000003.pth")
    assert load_checkpoint(split / "model_0000003.pth")["ema_updates"] == 3
    Trainer(tiny_cfg(split, *EMA, "SOLVER.CHECKPOINT_PERIOD=3"), evaluator=spy_evaluator([])).train(resume=True)
    a, b = load_checkpoint(straight / "model_final.pth"), load_checkpoint(split / "model_final.pth")
    assert a["ema_updates"] == b["ema_updates"] == 6
    assert a["ema"].keys() == a["model"].keys()
    for name in ("model", "ema"):
        for key, value in a[name].items():
            torch.testing.assert_close(b[name][key], value, rtol=0, atol=1e-6, msg=f"{name} {key}")
    differs = [k for k, v in a["ema"].items() if v.is_floating_point() and not torch.equal(v, a["model"][k])]
    assert differs  # the EMA is not just the raw weights
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(a["ema"][key], value), key

    model = trainer.bare_model
    load_model_weights(model, straight / "model_final.pth", require_all=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in a["ema"].items())


def test_eval_cli_uses_ema_weights_unless_raw_weights(digits_root, monkeypatch, tmp_path):  # noqa: F811
    calls = []

    def record_and_stop(model, path, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # stop before the evaluation itself

    monkeypatch.setattr("od2.engine.checkpoint.load_model_weights", record_and_stop)
    demo = Path(__file__).resolve().parents[2] / "configs/digits/retinanet_lite0.yaml"
    torch.save({"model": {}}, tmp_path / "w.pth")  # od2 eval reads it first for its class names (none here)
    config = ["--config", str(demo), "--weights", str(tmp_path / "w.pth"),
              "DATASETS.TEST=[e2e_digits_val]", "MODEL.BACKBONE.PRETRAINED=false"]
    for extra in ([], ["--raw-weights"]):
        with pytest.raises(KeyboardInterrupt):
            main(["eval", *config, *extra])
    assert [c["prefer_ema"] for c in calls] == [True, False]


# ---------------------------------------------------------------- mixed precision

AMP_RUN = ["SOLVER.MAX_ITER=2", "SOLVER.IMS_PER_BATCH=2", "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=96"]


def spy_forward(monkeypatch, trainer: Trainer) -> list[tuple]:
    """Record (autocast enabled, autocast dtype, loss dtypes) at every training forward."""
    real_forward = trainer.model.forward
    seen = []

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     {v.dtype for v in out.values()}))
        return out

    monkeypatch.setattr(trainer.model, "forward", forward)
    return seen


def test_bf16_trains_with_finite_fp32_losses(digits_root, tmp_path, monkeypatch):  # noqa: F811
    trainer = Trainer(tiny_cfg(tmp_path, *AMP_RUN, "SOLVER.AMP=bf16"))
    seen = spy_forward(monkeypatch, trainer)
    trainer.train()
    assert seen == [(True, torch.bfloat16, {torch.float32})] * 2
    assert not trainer.scaler.is_enabled() and "scaler" not in load_checkpoint(tmp_path / "model_final.pth")
    losses = [m["total_loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def fp16_supported() -> bool:
    try:
        return amp_dtype("fp16", torch.device("cpu")) is torch.float16
    except ConfigError:
        return False


@pytest.mark.slow  # fp16 autocast is slow on CPU: its two tiny iterations took 50 s, bf16's 15 s
@pytest.mark.skipif(not fp16_supported(), reason="this torch has no float16 autocast on CPU")
def test_fp16_grad_scaler_skips_inf_steps_and_is_checkpointed(digits_root, tmp_path, monkeypatch):  # noqa: F811
    cfg = tiny_cfg(tmp_path, *AMP_RUN, "SOLVER.AMP=fp16", "SOLVER.CHECKPOINT_PERIOD=1")
    trainer = Trainer(cfg)
    seen = spy_forward(monkeypatch, trainer)
    scale = trainer.scaler.get_scale()
    calls = {"n": 0}

    def poison_second_backward(grad):  # inf gradients at iteration 1 (lr > 0): the scaler must skip that step
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 2 else grad

    next(p for p in trainer.model.parameters() if p.requires_grad).register_hook(poison_second_backward)
    norms = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: norms.append(real_clip(*a, **k)))
    trainer.train()
    assert seen == [(True, torch.float16, {torch.float32})] * 2
    assert 0 < norms[0] < 100 and not torch.isfinite(norms[1])  # clipping sees unscaled gradients
    assert trainer.scaler.get_scale() == scale / 2  # backed off once
    first, final = load_checkpoint(tmp_path / "model_0000001.pth"), load_checkpoint(tmp_path / "model_final.pth")
    assert first["scaler"]["scale"] == scale and final["scaler"]["scale"] == scale / 2
    for key, value in first["model"].items():  # the step at iteration 1 was skipped
        assert torch.equal(final["model"][key], value), key

    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    resumed = Trainer(cfg)
    resumed.resume_or_start(resume=True)
    assert resumed.scaler.state_dict() == first["scaler"]


def test_bad_amp_value_is_a_config_error(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match="SOLVER.AMP='fp8'"):
        Trainer(tiny_cfg(tmp_path, "SOLVER.AMP=fp8"))
    with pytest.raises(ConfigError, match="SOLVER.AMP='bf16'.*no torch.bfloat16 autocast on meta"):
        amp_dtype("bf16", torch.device("meta"))
    config = tmp_path / "cfg.yaml"
    config.write_text(f"SOLVER:\n  AMP: half\nMODEL:\n  DEVICE: cpu\nOUTPUT_DIR: {tmp_path / 'run'}\n")
    monkeypatch.setattr("od2.engine.setup.setup_logging", lambda *args: None)  # keep pytest's log handlers
    assert main(["train", "--config", str(config)]) == 2
    assert "SOLVER.AMP='half'" in capsys.readouterr().err

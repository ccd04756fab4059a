"""MODEL.COMPILE (od2.engine.compile): config checks, the compiled forward only in training, the compiled head
against eager per norm (inductor on CPU, fp32 and bf16 autocast), and a compiled training run against eager with
EMA, checkpoints that load into an eager model, and resume."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from test_train_e2e import digits_root, read_metrics, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.config import ConfigError, load_config
from od2.engine.checkpoint import load_checkpoint
from od2.engine.compile import compile_for_training, compile_settings, compile_training_forward
from od2.engine.trainer import Trainer
from od2.modeling.build import build_model
from od2.modeling.retinanet_head import RetinaNetHead


def model_cfg(*overrides: str):
    return load_config(None, list(overrides)).MODEL


def test_compile_settings_read_and_check_the_keys():
    assert compile_settings(model_cfg()) is None  # off by default
    assert compile_settings(model_cfg("MODEL.COMPILE=max-autotune")) == ("max-autotune", "inductor")
    assert compile_settings(model_cfg("MODEL.COMPILE=default", "MODEL.COMPILE_BACKEND=aot_eager")) == (
        "default", "aot_eager")
    with pytest.raises(ConfigError, match=r"MODEL.COMPILE 'max_autotune' is not one of .*did you mean 'max-autotune'"):
        compile_settings(model_cfg("MODEL.COMPILE=max_autotune"))
    with pytest.raises(ConfigError, match="MODEL.COMPILE_BACKEND 'inducter'.*did you mean 'inductor'"):
        compile_settings(model_cfg("MODEL.COMPILE=default", "MODEL.COMPILE_BACKEND=inducter"))
    with pytest.raises(ConfigError, match="MODEL.COMPILE='max-autotune' is a mode of the inductor backend"):
        compile_settings(model_cfg("MODEL.COMPILE=max-autotune", "MODEL.COMPILE_BACKEND=aot_eager"))


class Recorder(nn.Module):
    """Linear(3, 2) that records, per call, whether it runs under torch.compile."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.compiled_calls: list[bool] = []

    def forward(self, x):
        self.compiled_calls.append(torch.compiler.is_compiling())
        return self.linear(x)


def test_compiled_forward_runs_in_training_only_and_keeps_the_module_tree():
    module = Recorder()
    keys = list(module.state_dict())
    compile_training_forward(module, "default", "eager")  # dynamo alone: the quickest backend
    x = torch.randn(4, 3)
    module.train()(x).sum().backward()
    assert module.compiled_calls == [True] and module.linear.weight.grad is not None
    with torch.no_grad():
        module(x)  # training mode, but no gradients: an evaluation's forward
    module.eval()(x)
    assert module.compiled_calls == [True, False, False]
    assert list(module.state_dict()) == keys and isinstance(module.linear, nn.Linear)


def test_compile_for_training_names_the_parts_and_refuses_a_model_without_them():
    model = build_model(load_config(None, ["MODEL.BACKBONE.NAME=resnet", "MODEL.RESNETS.DEPTH=18"]), 3)
    keys = list(model.state_dict())
    assert compile_for_training(model, "default", "eager") == ["backbone", "neck", "head"]
    assert list(model.state_dict()) == keys  # no "_orig_mod." anywhere
    with pytest.raises(ValueError, match="MODEL.COMPILE: Linear has none of the parts"):
        compile_for_training(nn.Linear(2, 2), "default", "eager")


@pytest.mark.slow  # one inductor compile of a head's forward and backward per case, 20-60 s each on 2 cores
@pytest.mark.parametrize("norm,bf16", [("EvoNormS0", False), ("GN", False), ("SN", False), ("SwitchNorm", False),
                                       ("EvoNormS0", True)])
def test_compiled_head_matches_eager_forward_and_backward(norm, bf16):
    torch.manual_seed(0)
    eager = RetinaNetHead(32, 3, 5, 2, num_convs=2, norm=norm, activation="NA" if norm == "EvoNormS0" else "relu")
    compiled = copy.deepcopy(eager)
    compile_training_forward(compiled, "default", "inductor")
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 32, 16, 20, generator=g), torch.randn(2, 32, 8, 10, generator=g)]
    outputs = {}
    for name, head in (("eager", eager), ("compiled", compiled)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, deltas = head.train()(features)
        loss = sum(x.float().square().mean() + x.float().mean() for x in logits + deltas)
        loss.backward()
        outputs[name] = (logits + deltas, {k: p.grad for k, p in head.named_parameters()}, head.state_dict())
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if bf16 else {"rtol": 1e-4, "atol": 1e-5}
    (eager_out, eager_grads, eager_state), (out, grads, state) = outputs["eager"], outputs["compiled"]
    for a, b in zip(eager_out, out):
        torch.testing.assert_close(b.float(), a.float(), **tolerance)
    assert eager_grads.keys() == grads.keys()
    for key, grad in eager_grads.items():
        scale = grad.abs().max().clamp(min=1e-6)  # bf16 gradients: relative to the tensor's largest entry
        torch.testing.assert_close(grads[key] / scale, grad / scale, **tolerance, msg=lambda m: f"{key}: {m}")
    for key, value in eager_state.items():  # buffers updated in the compiled forward: SN's u and sigma, running stats
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow  # three training runs, two of them compiled
def test_compiled_training_matches_eager_checkpoints_load_eager_and_resume(digits_root, tmp_path):  # noqa: F811
    """The trainer's compile path with the aot_eager backend: dynamo's capture and AOTAutograd's forward/backward
    split and functionalisation, as inductor has them, without inductor's C++ code generation, which takes over half
    an hour for this model's forward and backward on a busy 2-core machine (the head tests above cover inductor)."""
    # ResNet-18 rather than TINY's Lite0: its graph is a quarter the size, so the three compiles take minutes less
    small = ["MODEL.BACKBONE.NAME=resnet", "MODEL.RESNETS.DEPTH=18", "MODEL.BACKBONE.PRETRAINED=false"]
    common = [*small, "SOLVER.MAX_ITER=3", "MODEL.EMA.ENABLED=true", "MODEL.EMA.DECAY=0.9",
              "SOLVER.CHECKPOINT_PERIOD=2"]
    compiled = [*common, "MODEL.COMPILE=default", "MODEL.COMPILE_BACKEND=aot_eager"]
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    Trainer(tiny_cfg(eager_dir, *common)).train()
    Trainer(tiny_cfg(compiled_dir, *compiled)).train()
    eager_losses = [m["total_loss"] for m in read_metrics(eager_dir)]
    compiled_losses = [m["total_loss"] for m in read_metrics(compiled_dir)]
    assert len(compiled_losses) == 3 and compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    a, b = load_checkpoint(eager_dir / "model_final.pth"), load_checkpoint(compiled_dir / "model_final.pth")
    assert list(b["model"]) == list(a["model"]) and list(b["ema"]) == list(a["ema"])
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=1e-5, msg=key)
    eager_model = build_model(tiny_cfg(tmp_path / "unused", *small), 10)
    eager_model.load_state_dict(b["model"])  # strict: the compiled run's checkpoint is an eager model's
    eager_model.load_state_dict(b["ema"])

    # A crash after the iteration-2 checkpoint, resumed with the compiled forward: the same weights as straight.
    (compiled_dir / "model_final.pth").unlink()
    (compiled_dir / "last_checkpoint").write_text("model_0000002.pth")
    Trainer(tiny_cfg(compiled_dir, *compiled)).train(resume=True)
    resumed = load_checkpoint(compiled_dir / "model_final.pth")
    assert resumed["iteration"] == 3 and resumed["ema_updates"] == b["ema_updates"]
    for key, value in b["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)

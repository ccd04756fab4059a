"""Weight-decay groups: conv/linear weights, norm parameters and biases get their own decay; frozen parameters
are left out and a parameter shared by two modules appears once."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from od2.config import get_cfg
from od2.engine.optimizer import build_optimizer, param_groups


class Toy(nn.Module):
    """conv(+bias) -> BN -> conv(no bias) -> GN -> linear, a frozen conv, and a linear sharing the first's weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Conv2d(4, 4, 1).requires_grad_(False)
        self.tied = nn.Linear(4, 2)
        self.tied.weight = self.fc.weight  # one Parameter reachable from two modules


def solver(wd=1e-4, norm=0.0, bias=-1.0):
    cfg = get_cfg().SOLVER
    cfg.WEIGHT_DECAY, cfg.WEIGHT_DECAY_NORM, cfg.WEIGHT_DECAY_BIAS = wd, norm, bias
    cfg.BASE_LR, cfg.MOMENTUM = 1.0, 0.0
    return cfg


def decay_by_param(optimizer) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            found.setdefault(id(p), []).append(group["weight_decay"])
    return found


@pytest.mark.parametrize("bias,expected_bias", [(-1.0, 1e-4), (0.0, 0.0), (3e-4, 3e-4)])
def test_each_parameter_gets_its_groups_decay(bias, expected_bias):
    m = Toy()
    opt = build_optimizer(m, solver(norm=5e-5, bias=bias))
    expected = {
        id(m.conv.weight): 1e-4, id(m.conv2.weight): 1e-4, id(m.fc.weight): 1e-4,
        id(m.bn.weight): 5e-5, id(m.bn.bias): 5e-5, id(m.gn.weight): 5e-5, id(m.gn.bias): 5e-5,
        id(m.conv.bias): expected_bias, id(m.fc.bias): expected_bias, id(m.tied.bias): expected_bias,
    }
    found = decay_by_param(opt)
    assert found == {k: [v] for k, v in expected.items()}  # each parameter once, frozen ones absent
    assert [g["name"] for g in opt.param_groups] == ["decay", "norm", "bias"]
    assert id(m.frozen.weight) not in found and id(m.frozen.bias) not in found


def test_sgd_applies_the_group_decays():
    m = Toy()
    before = {name: p.detach().clone() for name, p in m.named_parameters()}
    opt = build_optimizer(m, solver(wd=0.1, norm=0.0, bias=0.2))
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # lr 1, no momentum, zero gradients: p <- p * (1 - wd)
    for name, p in m.named_parameters():
        factor = 1.0 if name.startswith(("bn.", "gn.", "frozen.")) else 0.8 if name.endswith("bias") else 0.9
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)


def test_empty_groups_are_dropped():
    groups = param_groups(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU()), 1e-4, 0.0, 1e-4)
    assert [g["name"] for g in groups] == ["decay"]
    assert param_groups(nn.BatchNorm2d(3).requires_grad_(False), 1e-4, 0.0, 1e-4) == []

"""LR schedules against their closed forms (original-spec §9.1)."""

from __future__ import annotations

import math

import pytest

from od2.config import get_cfg
from od2.engine.lr_schedule import LRSchedule

BASE = 0.02


def test_piecewise_with_warmup_from_zero():
    s = LRSchedule(base_lr=BASE, max_iter=120, decay_type="piecewise", steps=(80, 100), gamma=0.1,
                   warmup_iters=10, warmup_factor=0.0)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(BASE / 2)
    assert s(2) == pytest.approx(BASE * 2 / 10)
    assert s(9) == pytest.approx(BASE * 9 / 10)
    assert s(10) == pytest.approx(BASE)
    assert s(79) == pytest.approx(BASE)
    assert s(80) == pytest.approx(BASE * 0.1)
    assert s(99) == pytest.approx(BASE * 0.1)
    assert s(100) == pytest.approx(BASE * 0.01)
    assert s(119) == pytest.approx(BASE * 0.01)
    assert s(500) == pytest.approx(BASE * 0.01)


def test_piecewise_gamma_and_unsorted_steps():
    s = LRSchedule(base_lr=1.0, max_iter=50, steps=(30, 10, 20), gamma=0.5)
    for it, k in [(0, 0), (9, 0), (10, 1), (19, 1), (20, 2), (29, 2), (30, 3), (49, 3)]:
        assert s(it) == pytest.approx(0.5 ** k), it


def test_warmup_factor():
    s = LRSchedule(base_lr=BASE, max_iter=100, steps=(50,), warmup_iters=20, warmup_factor=0.1)
    assert s(0) == pytest.approx(0.1 * BASE)
    for it in (5, 10, 15):
        alpha = it / 20
        assert s(it) == pytest.approx(BASE * (0.1 * (1 - alpha) + alpha))
    assert s(20) == pytest.approx(BASE)


def test_warmup_replaces_decay_while_it_lasts():
    s = LRSchedule(base_lr=BASE, max_iter=100, steps=(5,), warmup_iters=10)
    assert s(8) == pytest.approx(BASE * 0.8)  # warmup value, not the decayed one
    assert s(10) == pytest.approx(BASE * 0.1)


@pytest.mark.parametrize("warmup", [0, 10])
def test_cosine(warmup):
    base, min_lr, max_iter = 0.02, 1e-6, 110
    s = LRSchedule(base_lr=base, max_iter=max_iter, decay_type="cosine", steps=(50, 80), min_lr=min_lr,
                   warmup_iters=warmup)

    def closed(it):
        return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * (it - warmup) / (max_iter - warmup)))

    for it in range(warmup, max_iter + 1, 7):
        assert s(it) == pytest.approx(closed(it), rel=1e-9, abs=1e-15), it
    assert s(warmup) == pytest.approx(base)
    assert s((warmup + max_iter) // 2) == pytest.approx((base + min_lr) / 2, rel=1e-2)
    assert s(max_iter) == pytest.approx(min_lr)
    assert s(max_iter + 50) == pytest.approx(min_lr)  # stays at the floor past the end
    if warmup:
        assert s(0) == 0.0 and s(warmup // 2) == pytest.approx(base / 2)


def test_constant():
    s = LRSchedule(base_lr=BASE, max_iter=100, decay_type="constant", steps=(10, 20), warmup_iters=4)
    assert s(0) == 0.0 and s(2) == pytest.approx(BASE / 2)
    for it in (4, 10, 20, 99, 1000):
        assert s(it) == BASE


def test_unknown_type():
    with pytest.raises(ValueError, match="LR_DECAY_TYPE"):
        LRSchedule(base_lr=BASE, max_iter=10, decay_type="exponentiall")


def test_from_cfg():
    cfg = get_cfg()
    s = LRSchedule.from_cfg(cfg.SOLVER)
    solver = cfg.SOLVER
    assert s(0) == pytest.approx(solver.WARMUP_FACTOR * solver.BASE_LR)
    assert s(solver.WARMUP_ITERS) == pytest.approx(solver.BASE_LR)
    assert s(solver.STEPS[0]) == pytest.approx(solver.BASE_LR * solver.GAMMA)
    cfg.SOLVER.LR_DECAY_TYPE = "cosine"
    assert LRSchedule.from_cfg(cfg.SOLVER)(solver.MAX_ITER) == pytest.approx(solver.MIN_LR)

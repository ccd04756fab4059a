"""``od2 lr-plot``: the PNG, the landmark table against the closed-form schedules, sharp steps, bad keys."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from od2.cli import main
from od2.config import load_config
from od2.engine.lr_schedule import LRSchedule
from od2.tools.lr_plot import DEFAULT_POINTS, sample_schedule

CONFIG = str(Path(__file__).resolve().parents[2] / "configs/coco/RetinaNet-BN.yaml")
ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S.*)$")


def closed_form(solver, it: int) -> float:
    """The schedule written out from its formulas, independently of od2.engine.lr_schedule."""
    base, warmup = solver.BASE_LR, solver.WARMUP_ITERS
    if it < warmup:
        alpha = it / warmup
        return base * (solver.WARMUP_FACTOR * (1 - alpha) + alpha)
    if solver.LR_DECAY_TYPE == "piecewise":
        return base * solver.GAMMA ** sum(it >= s for s in solver.STEPS)
    min_lr, max_iter = solver.MIN_LR, solver.MAX_ITER
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * (it - warmup) / (max_iter - warmup)))


def run_lr_plot(tmp_path, capsys, *extra: str) -> tuple[int, dict[int, tuple[float, str]], str]:
    """Run ``od2 lr-plot`` writing under tmp_path; return (exit code, {iteration: (lr, what)}, stdout)."""
    code = main(["lr-plot", "--config", CONFIG, f"OUTPUT_DIR={tmp_path}", *extra])
    out = capsys.readouterr().out
    rows = {int(m[1]): (float(m[2]), m[3]) for line in out.splitlines()[2:] if (m := ROW.match(line))}
    return code, rows, out


@pytest.mark.parametrize("overrides", [(), ("SOLVER.LR_DECAY_TYPE=cosine", "SOLVER.WARMUP_FACTOR=0.1"),
                                       ("SOLVER.LR_DECAY_TYPE=cosine", "--log-y")])
def test_writes_png_and_prints_closed_form_landmarks(tmp_path, capsys, overrides):
    code, rows, out = run_lr_plot(tmp_path, capsys, *overrides)
    assert code == 0
    png = tmp_path / "lr_schedule.png"
    assert f"LR schedule drawn: {png}" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (900, 500)
        image.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["lr_schedule.png"], "no temp file left behind"

    solver = load_config(CONFIG, [o for o in overrides if "=" in o]).SOLVER
    expected = {0: "start", solver.WARMUP_ITERS: "end of warmup", solver.MAX_ITER - 1: "last iteration"}
    if solver.LR_DECAY_TYPE == "piecewise":
        expected.update({s: f"step {k}" for k, s in enumerate(solver.STEPS, 1)})
    assert {it: what for it, (_, what) in rows.items()} == expected
    for it, (lr, _) in rows.items():
        assert lr == pytest.approx(closed_form(solver, it), rel=1e-7, abs=1e-12), it
    if solver.LR_DECAY_TYPE == "piecewise":
        assert rows[80000][0] == pytest.approx(0.002) and rows[100000][0] == pytest.approx(0.0002)
    else:
        assert rows[solver.MAX_ITER - 1][0] == pytest.approx(solver.MIN_LR, rel=1e-3)


def test_out_flag(tmp_path, capsys):
    target = tmp_path / "sub" / "plot.png"
    assert main(["lr-plot", "--config", CONFIG, "--out", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    with Image.open(target) as image:
        assert image.format == "PNG"


def test_sampled_curve_is_exact_around_every_step():
    solver = load_config(CONFIG).SOLVER
    iterations, lrs = sample_schedule(LRSchedule.from_cfg(solver))
    assert iterations[0] == 0 and iterations[-1] == solver.MAX_ITER - 1
    assert (np.diff(iterations) > 0).all()
    assert len(iterations) <= DEFAULT_POINTS + 2 + 2 * (1 + len(solver.STEPS))
    curve = dict(zip(iterations.tolist(), lrs.tolist()))
    for k, step in enumerate(solver.STEPS):
        assert curve[step - 1] == pytest.approx(solver.BASE_LR * solver.GAMMA ** k, rel=1e-12)
        assert curve[step] == pytest.approx(solver.BASE_LR * solver.GAMMA ** (k + 1), rel=1e-12)
    warmup = solver.WARMUP_ITERS
    assert curve[warmup - 1] == pytest.approx(closed_form(solver, warmup - 1), rel=1e-12)
    assert curve[warmup] == pytest.approx(solver.BASE_LR, rel=1e-12)
    for it in iterations[:: 97]:
        assert curve[int(it)] == pytest.approx(closed_form(solver, int(it)), rel=1e-12)


def test_short_schedule_samples_every_iteration():
    iterations, lrs = sample_schedule(LRSchedule(base_lr=1.0, max_iter=50, steps=(20,), gamma=0.5))
    assert iterations.tolist() == list(range(50))
    assert lrs[19] == 1.0 and lrs[20] == 0.5


@pytest.mark.parametrize("override, key", [("SOLVER.BASE_LRR=0.1", "SOLVER.BASE_LRR"),
                                           ("SOLVER.LR_DECAY_TYPE=exp", "LR_DECAY_TYPE")])
def test_bad_config_key_is_a_clean_error(tmp_path, capsys, override, key):
    code = main(["lr-plot", "--config", CONFIG, f"OUTPUT_DIR={tmp_path}", override])
    captured = capsys.readouterr()
    assert code != 0
    assert key in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "lr_schedule.png").exists()

"""``od2 report SWEEP_DIR``: statistics over seeds of a sweep folder (tables, report.json, report.png)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from test_report import make_run
from test_sweep_stats import exact_seeds_for_power

from od2.cli import main
from od2.evaluation.coco_evaluator import STAT_NAMES
from od2.tools.sweep_report import is_sweep_folder, read_sweep

SEEDS = (1, 2, 3)
# made-up AP per arm and seed; the other COCO numbers are AP plus a fixed offset per metric
AP = {"base": {1: 0.400, 2: 0.420, 3: 0.410},
      "giou": {1: 0.430, 2: 0.450},  # seed 3 failed
      "cosine": {1: 0.380, 2: 0.405, 3: 0.395},
      "stitch": {2: 0.440}}  # seed 1 done but its summary is missing, seed 3 pending
S_PER_IMG = {"base": (0.10, 0.12, 0.11), "giou": (0.10, 0.11), "cosine": (0.09, 0.1, 0.11), "stitch": (0.2,)}


def make_sweep(root: Path) -> Path:
    runs = []
    for arm in AP:
        for index, seed in enumerate(SEEDS):
            run = dict(arm=arm, seed=seed, dir=f"{arm}/seed{seed}", status="done", error=None, seconds=600.0 + seed)
            if seed in AP[arm]:
                summary = {name: AP[arm][seed] + 0.01 * k for k, name in enumerate(STAT_NAMES)}
                summary.update(s_per_img=S_PER_IMG[arm][index - (arm == "stitch")], num_images=72)
                (root / run["dir"] / "eval").mkdir(parents=True)
                (root / run["dir"] / "eval" / "coco_summary.json").write_text(json.dumps(summary))
            elif arm == "giou":
                traceback = "Traceback (most recent call last):\n  ...\nRuntimeError: loss is NaN"
                run.update(status="failed", error=traceback, seconds=None)
            elif seed == 3:
                run.update(status="pending", seconds=None)
            runs.append(run)
    spec = dict(base="configs/bccd/retinanet_lite0.yaml", overrides=["SOLVER.MAX_ITER=440"],
                arms={arm: [] for arm in AP}, seeds=list(SEEDS), output=str(root))
    (root / "sweep.json").write_text(json.dumps(dict(spec=spec, spec_file="spec.yaml", runs=runs)))
    return root


def t_interval(values) -> tuple[float, float]:
    return stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))


def test_sweep_report_prints_tables_and_writes_json_and_png(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep)]) == 0
    printed = capsys.readouterr().out
    written = (sweep / "report.md").read_text()
    assert written in printed
    # per arm: seeds done, mean ± half the t interval; one seed: the interval is undefined, not nan
    low, high = t_interval([0.400, 0.420, 0.410])
    assert f"| base | 3 | 0.410 ± {(high - low) / 2:.3f} |" in written
    assert "| stitch | 1 | 0.440 ± n/a |" in written and "nan" not in written
    # paired differences on the seeds both have: giou seeds 1 2 (3 failed), cosine 1 2 3, stitch 2 only
    assert "| giou | 1 2 | +0.030 | [+0.030, +0.030] (width 0: every seed gave the same difference) | 0 | + + |" \
           " better | 2 |" in written
    test = stats.ttest_rel([0.380, 0.405, 0.395], [0.400, 0.420, 0.410])
    low, high = test.confidence_interval(0.95)
    differences = [-0.02, -0.015, -0.015]
    exact = exact_seeds_for_power(np.mean(differences) / np.std(differences, ddof=1))  # scipy's noncentral t
    planned = next(n for n in (exact - 1, exact, exact + 1)
                   if f"| {'worse' if high < 0 else 'not resolved'} | {n} |" in written)
    assert (f"| cosine | 1 2 3 | -0.017 | [{low:+.3f}, {high:+.3f}] | {test.pvalue:.3g} | - - - |"
            f" {'worse' if high < 0 else 'not resolved'} | {planned} |") in written
    assert "| stitch | 2 | +0.020 | undefined: 1 paired seed | - | + | not resolved | - |" in written
    # runs not done are listed with their reason
    assert "| giou | 3 | `giou/seed3` | failed | RuntimeError: loss is NaN |" in written
    assert "| stitch | 1 | `stitch/seed1` | done | no eval/coco_summary.json |" in written
    assert "| stitch | 3 | `stitch/seed3` | pending | - |" in written

    numbers = json.loads((sweep / "report.json").read_text())
    assert numbers["reference"] == "base" and numbers["metric"] == "AP"
    cosine = numbers["arms"]["cosine"]["metrics"]
    for name, offset in (("AP", 0.0), ("ARl", 0.11)):
        values = [v + offset for v in AP["cosine"].values()]
        assert cosine[name]["mean"] == pytest.approx(np.mean(values))
        assert (cosine[name]["low"], cosine[name]["high"]) == pytest.approx(t_interval(values))
    assert (cosine["s_per_img"]["low"], cosine["s_per_img"]["high"]) == pytest.approx(t_interval([0.09, 0.1, 0.11]))
    assert numbers["arms"]["giou"]["seeds_done"] == [1, 2]
    paired = numbers["paired"]["cosine"]
    assert paired["p_value"] == pytest.approx(test.pvalue) and paired["signs"] == "- - -"
    assert (paired["low"], paired["high"]) == pytest.approx((low, high))
    assert paired["seeds_for_power"] == planned and 2 < planned < 20
    assert numbers["paired"]["stitch"]["low"] is None and "undefined" in numbers["paired"]["stitch"]["note"]
    assert numbers["paired"]["stitch"]["seeds_for_power"] is None
    assert {(r["arm"], r["seed"], r["status"]) for r in numbers["not_done"]} == {
        ("giou", 3, "failed"), ("stitch", 1, "done"), ("stitch", 3, "pending")}

    with Image.open(sweep / "report.png") as image:
        assert image.format == "PNG" and image.width > 400


def test_metric_and_confidence_choose_the_paired_table(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep), "--metric", "AP50", "--confidence", "0.9"]) == 0
    numbers = json.loads((sweep / "report.json").read_text())
    assert numbers["metric"] == "AP50" and numbers["confidence"] == 0.9
    test = stats.ttest_rel([0.390, 0.415, 0.405], [0.410, 0.430, 0.420])  # AP50 = AP + 0.01
    assert (numbers["paired"]["cosine"]["low"], numbers["paired"]["cosine"]["high"]) == pytest.approx(
        test.confidence_interval(0.9))
    assert "## AP50 against `base`, paired by seed" in capsys.readouterr().out


def test_reference_is_the_first_arm_without_a_base(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    record = json.loads((sweep / "sweep.json").read_text())
    record["spec"]["arms"] = {"cosine": [], "giou": [], "stitch": []}  # base's runs stay: reported after these
    (sweep / "sweep.json").write_text(json.dumps(record))
    results = read_sweep(sweep)
    assert results.reference == "cosine" and results.arms == ["cosine", "giou", "stitch", "base"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    (json.dumps({"spec": {"arms": {"a": []}}}), "no key 'runs'"),
    (json.dumps({"spec": {"arms": {}}, "runs": []}), "spec.arms is empty"),
    (json.dumps({"spec": {"arms": {"a": []}}, "runs": [{"arm": "a", "seed": 1, "dir": "a/seed1"}]}),
     "runs[0]: no key 'status'"),
])
def test_a_bad_sweep_json_is_a_one_line_error_naming_the_file(tmp_path, capsys, content, message):
    (tmp_path / "sweep.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "sweep.json" in error and message in error


def test_an_unknown_metric_is_an_error(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep), "--metric", "mAP"]) == 2
    assert "--metric mAP: not a COCO metric" in capsys.readouterr().err


def test_run_folders_beside_a_sweep_still_get_the_results_document(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    run = make_run(tmp_path / "run", "configs/coco/RetinaNet-BN.yaml")
    assert is_sweep_folder(sweep) and not is_sweep_folder(run)
    assert main(["report", str(sweep), str(run), "--out", str(tmp_path / "results.md")]) == 0
    printed = capsys.readouterr().out
    assert "report of 1 runs" in printed and (sweep / "report.md").is_file()
    assert "| RetinaNet-BN | 0.339 | 0.521 |" in (tmp_path / "results.md").read_text()


def test_reference_chooses_the_arm_the_others_are_compared_with(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep), "--reference", "cosine"]) == 0
    numbers = json.loads((sweep / "report.json").read_text())
    assert numbers["reference"] == "cosine" and set(numbers["paired"]) == {"base", "giou", "stitch"}
    test = stats.ttest_rel([0.400, 0.420, 0.410], [0.380, 0.405, 0.395])
    assert numbers["paired"]["base"]["p_value"] == pytest.approx(test.pvalue)
    assert main(["report", str(sweep), "--reference", "nope"]) == 2
    assert "--reference nope: no such arm" in capsys.readouterr().err


def test_a_difference_of_zero_on_every_seed_is_never_resolved_by_more_seeds():
    from od2.tools.sweep_report import _paired_record, _planned_cell
    from od2.tools.sweep_stats import paired_difference

    record = _paired_record(paired_difference({1: 0.4, 2: 0.5}, {1: 0.4, 2: 0.5}))
    assert record["seeds_for_power"] is None and _planned_cell(record) == "never: Δ is 0"
    small = _paired_record(paired_difference({1: 0.401, 2: 0.4991, 3: 0.45}, {1: 0.4, 2: 0.5, 3: 0.45}))
    assert small["seeds_for_power"] is None and _planned_cell(small) == "> 1000"  # Δ 0.00003 against sd 0.001

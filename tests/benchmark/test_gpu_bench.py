"""benchmarks/gpu.sh (benchmarks/gpu_bench.py): the table's speed ratios and goals, the docs section it rewrites, and
the whole script as a CPU dry run so that it cannot rot between GPU sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_bench import BEGIN, END, Row, docs_section, markdown_table, settings  # noqa: E402

from od2.benchmark.suite import write_section  # noqa: E402


def test_speed_ratio_reads_above_one_as_od2_faster_for_times_and_rates():
    assert Row("a", "s/img", 0.008, 0.012, "torchvision", 1.25).speed_ratio == pytest.approx(1.5)
    assert Row("b", "images/s", 130.0, 100.0, "torchvision", 1.3).speed_ratio == pytest.approx(1.3)
    table = markdown_table([Row("a", "s/img", 0.008, 0.012, "torchvision", 1.25),
                            Row("b", "images/s", 120.0, 100.0, "torchvision", 1.3),
                            Row("c", "s/img", None, 0.012, "torchvision", 1.25),
                            Row("d", "images/s", 50.0, None, "published")])
    assert "| a | s/img | 0.008 | 0.012 | torchvision | 1.50 | >= 1.25: met |" in table
    assert "| b | images/s | 120 | 100 | torchvision | 1.20 | >= 1.30: not met |" in table
    assert "| c | s/img | n/a | 0.012 | torchvision | n/a | >= 1.25 |" in table
    assert "| d | images/s | 50 | n/a | published | n/a |  |" in table


def test_gpu_section_replaces_its_own_markers_only(tmp_path):
    original = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert original.count(BEGIN) == 1 == original.count(END) and original.index(BEGIN) < original.index(END)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(original, encoding="utf-8")
    section = docs_section([Row("a", "s/img", 0.008, 0.012, "torchvision", 1.25)], settings(dry_run=True),
                           "Some GPU", "580.1", 12.0)
    write_section(doc, section, BEGIN, END)
    rewritten = doc.read_text(encoding="utf-8")

    def outside(text: str) -> tuple[str, str]:
        return text[:text.index(BEGIN)], text[text.index(END):]

    assert outside(rewritten) == outside(original)
    assert "Some GPU, driver 580.1, torch " in rewritten and "| a | s/img | 0.008 |" in rewritten


@pytest.mark.slow  # every step of the script on the CPU: ResNet-50 pairs, 17 heads, two EfficientDet-D0s (minutes)
def test_gpu_sh_dry_run_measures_every_step_and_writes_the_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    env = {**os.environ, "PYTHON": sys.executable, "OD2_GPU_DRY_RUN": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--docs", str(docs)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("[retinanet + compiled]", "[heads]", "[efficientdet]"):
        assert name in done.stdout
    section = docs.read_text(encoding="utf-8")
    for measure in ("RetinaNet-R50-FPN inference, batch 1, fp32 |", "RetinaNet-R50-FPN training, batch 2, bf16 |",
                    "TEST.COMPILE=reduce-overhead", "MODEL.COMPILE=default", "head SwitchNorm training step",
                    "fp32, compiled", "EfficientDet-D0 (paper config), 128x128 training, batch 2, fp32"):
        assert measure in section, measure
    assert section.count("| head ") == 6 + 6 + 5  # fp32 and bf16 eager with "no norm", compiled without
    assert "CPU (dry run), driver n/a, torch " + torch.__version__ in section

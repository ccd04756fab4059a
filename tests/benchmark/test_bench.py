"""od2 bench: the matched model pair, the evaluation benchmark's agreement with pycocotools, the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from od2.benchmark.coco_eval_speed import evaluation_seconds, synthetic_coco
from od2.benchmark.retinanet_pair import random_batch, retinanet_pair
from od2.benchmark.suite import BEGIN, END, Row, markdown_section, markdown_table, write_section
from od2.benchmark.timing import Rounds, interleaved_rounds
from od2.cli import main

BENCHMARKS_DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def pair():
    return retinanet_pair("FrozenBN", short_side=128)


def test_pair_has_the_same_anchors_up_to_torchvision_conventions(pair):
    """Same anchors per cell and the same cell order. torchvision centres cells at j * stride (od2 at
    (j + 0.5) * stride), rounds the cell anchors to whole pixels, and reads an aspect ratio as h / w (od2 as w / h,
    as the original), so its ratio blocks come in the reverse order."""
    ours, theirs = pair
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # a 128x128 input: strides 8..128 exactly
    od2_anchors = ours.anchor_generator(sizes, torch.device("cpu"))
    from torchvision.models.detection.image_list import ImageList

    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    tv_anchors = theirs.anchor_generator(ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)]), features)[0]
    stride_offsets = torch.cat([torch.full((h * w * 9, 1), 64.0 / h) for h, w in sizes])
    tv_in_od2_order = tv_anchors.view(-1, 3, 3, 4).flip(1).reshape(-1, 4)  # [cells, ratio, size, 4]
    torch.testing.assert_close(torch.cat(od2_anchors) - stride_offsets, tv_in_od2_order, atol=0.5, rtol=0)


def test_pair_shares_classification_bias_and_frozen_stages(pair):
    ours, theirs = pair
    torch.testing.assert_close(ours.head.cls_score.bias, theirs.head.classification_head.cls_logits.bias)
    assert ours.head.cls_score.bias.sigmoid().gt(0.05).float().mean().item() == pytest.approx(0.5, abs=0.1)
    frozen = [name for name, p in theirs.backbone.body.named_parameters() if not p.requires_grad]
    assert frozen and all(name.startswith(("conv1", "layer1")) for name in frozen)
    assert not any(p.requires_grad for p in ours.backbone.layer1.parameters())
    assert all(p.requires_grad for p in ours.backbone.layer2.parameters())


def test_pair_both_detect_100_boxes_on_the_random_batch(pair):
    ours, theirs = pair
    images, _, _ = random_batch(2, height=128, width=160)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        ours_out = ours(images, torch.tensor([[128, 160]] * 2))
        theirs_out = theirs([image.float() / 255 for image in images])
    assert [len(d["boxes"]) for d in ours_out] == [100, 100] == [len(d["boxes"]) for d in theirs_out]


def test_synthetic_coco_and_the_evaluators_agree():
    gt, detections = synthetic_coco(num_images=30)
    per_image = {}
    for d in detections:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert set(per_image.values()) == {100} and len(per_image) == 30
    seconds, difference = evaluation_seconds(iters=1, num_images=30)
    assert difference < 1e-12
    assert set(seconds) == {"od2", "pycocotools"} and all(r.best > 0 for r in seconds.values())


def test_rounds_best_median_and_per_image():
    rounds = Rounds((3.0, 1.0, 2.0, 10.0))
    assert rounds.best == 1.0 and rounds.median == 2.5
    assert rounds.per(2).seconds == (1.5, 0.5, 1.0, 5.0)


def test_interleaved_rounds_take_turns_after_warmup():
    calls = []
    rounds = interleaved_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iters=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert set(rounds) == {"a", "b"} and all(len(r.seconds) == 2 for r in rounds.values())


def test_timed_row_compares_best_rounds_and_shows_medians():
    row = Row.timed("train step", "s/it", Rounds((7.0, 9.0, 8.0)), Rounds((8.0, 10.0, 12.0)), "torchvision", 0.9)
    assert row.ratio == pytest.approx(7.0 / 8.0)
    assert row.cells() == ["train step", "7 s/it (median 8)", "8 s/it (median 10) (torchvision)", "0.875", "<= 0.9",
                           "yes"]


@pytest.mark.parametrize("cpu", ["Intel(R) Xeon(R) Processor", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                                 "x86_64"])
def test_rows_table_and_section_written_between_markers(tmp_path, monkeypatch, cpu):
    """The section's text must not depend on the machine that runs the test: the CPU name opens the intro
    paragraph, so it moves the points where the paragraph wraps."""
    monkeypatch.setattr("od2.benchmark.suite.machine_description",
                        lambda: f"{cpu}, 2 cores, 2 threads, torch 2.0, torchvision 0.15")
    rows = [Row("inference", "s/img", 0.5, 1.0, "torchvision", 0.8), Row("data", "img/s", 300.0)]
    table = markdown_table(rows)
    assert "| inference | 0.5 s/img | 1 s/img (torchvision) | 0.500 | <= 0.8 | yes |" in table
    assert "| data | 300 img/s |  |  |  |  |" in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## Other section\n\nkept\n", encoding="utf-8")
    write_section(doc, markdown_section(rows, iters=3, command="od2 bench --iters 3"))
    first = doc.read_text(encoding="utf-8")
    as_rendered = " ".join(first.split())  # Markdown reads a line break inside a paragraph as a space
    assert first.count(BEGIN) == 1 and "## Other section\n\nkept" in first and "`od2 bench --iters 3`" in as_rendered
    write_section(doc, markdown_section([Row("inference", "s/img", 0.9, 1.0, "torchvision", 0.8)], iters=3))
    second = doc.read_text(encoding="utf-8")
    assert second.count(BEGIN) == 1 == second.count(END) and "| no |" in second and "0.5 s/img" not in second


def test_docs_benchmarks_section_is_replaced_and_the_rest_kept(tmp_path):
    """docs/benchmarks.md holds one od2-bench section between its markers; od2 bench rewrites only that."""
    original = BENCHMARKS_DOC.read_text(encoding="utf-8")
    assert original.count(BEGIN) == 1 == original.count(END) and original.index(BEGIN) < original.index(END)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(original, encoding="utf-8")
    write_section(doc, markdown_section([Row("inference", "s/img", 0.5, 1.0, "torchvision", 0.8)], iters=1))
    rewritten = doc.read_text(encoding="utf-8")

    def outside(text: str) -> tuple[str, str]:
        return text[:text.index(BEGIN)], text[text.index(END):]

    assert outside(rewritten) == outside(original) and "| inference | 0.5 s/img |" in rewritten


def test_bench_cli_measures_and_writes(tmp_path, capsys, monkeypatch):
    heap_settings = []
    monkeypatch.setattr("od2.utils.cpu_heap.keep_freed_memory", lambda: heap_settings.append(True))  # the
    # process-wide malloc setting is tested in tests/utils/test_cpu_heap.py, in a process of its own
    out = tmp_path / "bench.md"
    assert main(["bench", "--only", "eval", "train", "--iters", "1", "--size", "64", "96", "--eval-images", "10",
                 "--threads", str(torch.get_num_threads()), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train step, 2 images of 64x96, trainable BN" in printed and "pycocotools" in printed
    assert "train step, 2 images of 64x96, FrozenBN" in out.read_text(encoding="utf-8")
    assert heap_settings == [True]


def test_inference_measure_runs_od2_converted_for_cpu_inference(monkeypatch):
    import od2.benchmark.model_speed as model_speed
    from od2.layers.winograd import WinogradConv2d

    converted = []
    convert = model_speed.convert_to_winograd
    monkeypatch.setattr(model_speed, "convert_to_winograd", lambda model: converted.append(convert(model)))
    rounds = model_speed.inference_seconds_per_image(1, 1, height=64, width=96)
    assert set(rounds) == {"od2", "torchvision"} and len(converted) == 1
    assert type(converted[0].head.cls_score) is WinogradConv2d  # od2's model, as TEST.WINOGRAD converts it


def test_the_data_row_measures_bccd_only_where_the_datasets_root_holds_it(tmp_path, monkeypatch):
    from od2.benchmark.data_speed import BCCD_CONFIG, DIGITS_CONFIG, default_pipeline

    monkeypatch.setenv("OD2_DATASETS", str(tmp_path))
    assert default_pipeline()[1] == DIGITS_CONFIG
    (tmp_path / "bccd").mkdir()
    _, config, overrides = default_pipeline()
    assert config == BCCD_CONFIG and overrides == [f"DATASETS.ROOT={tmp_path}"]

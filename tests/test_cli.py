"""The od2 command line's error contract: one line and exit 1 for a failure, the traceback with --debug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from od2.cli import main


@pytest.fixture
def failing_report(tmp_path, monkeypatch) -> list[str]:
    """``od2 report`` arguments whose command fails inside with a RuntimeError (not a config error)."""

    def write_report(runs, out):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr("od2.tools.report.write_report", write_report)
    return ["report", str(tmp_path), "--out", str(tmp_path / "results.md")]


def test_a_failure_is_one_line_and_exit_code_1(failing_report, capsys):
    assert main(failing_report) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("od2 report: error: RuntimeError: the disk caught fire") and "--debug" in lines[0]


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_debug_prints_the_traceback(failing_report, capsys, where):
    argv = ["--debug", *failing_report] if where == "before the command" else [*failing_report, "--debug"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "the disk caught fire" in err


def test_debug_reaches_nested_commands(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["data", "stats", "--format", "yolo", "--input", str(missing), "--debug"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_config_errors_keep_exit_code_2_without_traceback(tmp_path, capsys):
    assert main(["lr-plot", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err


def test_the_traceback_goes_to_the_run_folders_log(tmp_path, capsys):
    """A training run that fails writes the whole traceback to OUTPUT_DIR/log.txt, the console gets one line."""
    config = Path(__file__).resolve().parents[1] / "configs/digits/retinanet_lite0.yaml"
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), f"OUTPUT_DIR={run}", "DATASETS.TRAIN=[empty_coco_for_cli]",
                 f"DATASETS.ROOT={tmp_path}"])
    assert code == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("od2 train: error:") and "--debug" in last
    assert "dataset 'empty_coco_for_cli' (DATASETS.TRAIN) has no images" in last and str(run / "log.txt") in last
    log = (run / "log.txt").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "empty_coco_for_cli" in log


@pytest.fixture(autouse=True)
def _empty_coco_dataset(tmp_path, monkeypatch):
    """``empty_coco_for_cli``: a COCO dataset without images, in a catalog of its own."""
    from od2.data import catalog

    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})
    annotations = tmp_path / "empty.json"
    annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}),
                           encoding="utf-8")
    catalog.register_coco_instances("empty_coco_for_cli", annotations, tmp_path)

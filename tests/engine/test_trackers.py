"""TensorBoard's per-class scalars and pictures, and the experiment trackers (MLflow in a local file store, Weights &
Biases offline): each gets the config, training scalars, per-class results and pictures of an evaluation."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
from PIL import Image
from test_hooks import QUICK
from test_train_e2e import digits_root, tiny_cfg  # noqa: F401 (digits_root is a fixture)

from od2.config import ConfigError
from od2.engine.trainer import Trainer

PER_CLASS = {"zero": {"AP": 0.5, "AP50": 0.75, "num_gt": 4, "num_dt": 9},
             "one one": {"AP": 0.25, "AP50": 0.5, "num_gt": 3, "num_dt": 2}}


class SummaryWithPictures:
    """An evaluator returning the summary shape od2's COCO evaluation has: numbers, per_class and figures."""

    def __init__(self, folder):
        self.picture = folder / "confusion.png"
        Image.fromarray(np.full((8, 12, 3), (255, 0, 0), dtype=np.uint8)).save(self.picture)

    def __call__(self, model):
        return {"AP": 0.375, "AP50": 0.625, "loss_cls": 0.5, "num_images": 40, "per_class": PER_CLASS,
                "figures": {"confusion_matrix": str(self.picture), "absent": str(self.picture.parent / "no.png")}}


def run_tiny(tmp_path, *extra):
    cfg = tiny_cfg(tmp_path / "run", *QUICK, "SOLVER.MAX_ITER=2", "TEST.EVAL_PERIOD=2", "LOG_PERIOD=1", *extra)
    Trainer(cfg, evaluator=SummaryWithPictures(tmp_path)).train()
    return cfg


def test_tensorboard_gets_per_class_scalars_and_the_pictures(digits_root, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_tiny(tmp_path)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"eval/AP", "eval/loss_cls", "eval_per_class/zero/AP", "eval_per_class/one one/num_dt"} <= set(
        tags["scalars"])
    assert events.Scalars("eval_per_class/one one/AP50")[0].value == 0.5
    assert events.Scalars("eval_per_class/zero/num_gt")[0].step == 2
    assert tags["images"] == ["eval_figures/confusion_matrix"]  # the absent file is left out
    image = events.Images("eval_figures/confusion_matrix")[0]
    assert (image.width, image.height) == (12, 8)


def test_mlflow_file_store_gets_config_scalars_per_class_and_pictures(digits_root, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    uri = (tmp_path / "store").as_uri()
    run_tiny(tmp_path, "TRACKERS=[mlflow]", f"TRACKER.MLFLOW.URI={uri}", "TRACKER.MLFLOW.EXPERIMENT=tiny")
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["SOLVER.MAX_ITER"] == "2"
    assert run.data.metrics["eval/AP"] == 0.375 and run.data.metrics["eval_per_class/one one/AP"] == 0.25
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/total_loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert artifacts == {"eval/0000002", "eval/per_class_0000002.json"}
    local = client.download_artifacts(run.info.run_id, "eval/per_class_0000002.json", str(tmp_path))
    assert json.loads(open(local).read()) == PER_CLASS
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval/0000002")] == ["eval/0000002/confusion.png"]
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "BASE_LR" in open(config).read()


def test_wandb_offline_gets_config_scalars_per_class_and_pictures(digits_root, tmp_path, monkeypatch):  # noqa: F811
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_tiny(tmp_path, "TRACKERS=[wandb]", "TRACKER.WANDB.PROJECT=tiny")
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (table,) = offline.glob("files/media/table/eval/per_class_2_*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["class", "AP", "AP50", "num_dt", "num_gt"]
    assert rows["data"] == [["zero", 0.5, 0.75, 9, 4], ["one one", 0.25, 0.5, 2, 3]]
    assert len(list(offline.glob("files/media/images/eval_figures/confusion_matrix_2_*.png"))) == 1
    # the scalars and the config are in the binary run file `wandb sync` uploads (protobuf records)
    # wandb's service process may still be flushing that file when run.finish() has returned: wait for it (up to
    # a minute), then look for the keys
    (record,) = offline.glob("run-*.wandb")
    keys = (b"eval/AP", b"eval_per_class/zero/AP50", b"train/total_loss", b"SOLVER.MAX_ITER")
    deadline = time.monotonic() + 60
    while not all(key in record.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [key for key in keys if key not in record.read_bytes()] == []


def test_an_unknown_or_missing_tracker_is_a_clear_error_at_start_up(digits_root, tmp_path, monkeypatch):  # noqa: F811
    with pytest.raises(ConfigError, match="TRACKERS 'mlflw' is not one of .*did you mean 'mlflow'"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "TRACKERS=[mlflw]"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *args: None if name == "wandb" else find_spec(name, *args))
    with pytest.raises(ConfigError, match=r"TRACKERS names 'wandb' but the wandb package is not installed: "
                                          r"pip install 'od2\[wandb\]'"):
        Trainer(tiny_cfg(tmp_path, *QUICK, "TRACKERS=[wandb]"))

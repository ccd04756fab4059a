"""Experiment trackers beside TensorBoard (TRACKERS: mlflow, wandb), optional extras: ``pip install 'od2[mlflow]'``.

Each tracker hook (rank 0 only) receives the resolved config at the start, the training scalars every LOG_PERIOD
steps (as ``train/<entry>``, ``train/lr``), and after each evaluation its scalars (``eval/<key>``), per-class results
(``eval_per_class/<class>/<key>``, and the ``per_class`` table) and pictures (``figures``), as :mod:`.eval_summary`
reads them from the summary.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from od2.utils.cfg_node import CfgNode, ConfigError, check_choice

from .base import HookBase
from .eval_summary import figures, per_class_scalars, scalars

TRACKER_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def require_package(tracker: str) -> None:
    """A ConfigError naming the extra to install when ``tracker``'s package is missing."""
    if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
        raise ConfigError(f"TRACKERS names {tracker!r} but the {TRACKER_PACKAGES[tracker]} package is not installed: "
                          f"pip install 'od2[{tracker}]', or remove {tracker!r} from TRACKERS")


def flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"SOLVER.BASE_LR": 0.02, ...}``: every leaf of a config (lists as their string)."""
    if not isinstance(node, dict):
        return {prefix: node if isinstance(node, (int, float, str, bool)) else str(node)}
    return {k: v for key, value in node.items() for k, v in flat_config(value, f"{prefix}{key}." if isinstance(
        value, dict) else f"{prefix}{key}").items()}


class TrackerHook(HookBase):
    """The calls every tracker shares: training scalars on the LOG_PERIOD, everything of an evaluation after it.
    Subclasses write ``start``, ``log_scalars``, ``log_evaluation`` and ``finish``."""

    def __init__(self, log_period: int):
        self.log_period = log_period
        self.failed = False

    def before_train(self) -> None:
        self.start(self.trainer.cfg)

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        done = iteration + 1
        if (self.log_period and done % self.log_period == 0) or done == self.trainer.max_iter:
            lr = self.trainer.optimizer.param_groups[0]["lr"]
            self.log_scalars({**{f"train/{k}": v for k, v in losses.items()}, "train/lr": lr}, done)

    def after_evaluation(self, iteration: int, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            self.log_evaluation(summary, iteration + 1)

    def on_exception(self, iteration: int, error: BaseException) -> None:
        self.failed = True

    def after_train(self) -> None:
        self.finish(self.failed)

    def start(self, cfg: CfgNode) -> None:
        raise NotImplementedError

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_evaluation(self, summary: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    def finish(self, failed: bool) -> None:
        raise NotImplementedError


class MLflowTracker(TrackerHook):
    """One MLflow run per training start, in ``uri`` (TRACKER.MLFLOW.URI; ``""``: ``sqlite:///OUTPUT_DIR/mlflow.db``,
    MLflow's recommended local store; a ``file://`` store needs MLFLOW_ALLOW_FILE_STORE=true since MLflow 3.x) under
    ``experiment``: the config as params and ``config.yaml``, scalars as metrics (names
    outside MLflow's alphabet become ``_``), each evaluation's ``per_class`` as ``eval/per_class_<step>.json`` and
    its pictures under ``eval/<step>/``."""

    def __init__(self, uri: str, experiment: str, log_period: int):
        super().__init__(log_period)
        self.uri, self.experiment = uri, experiment
        self.run = None

    def start(self, cfg: CfgNode) -> None:
        import mlflow

        uri = self.uri or f"sqlite:///{Path(cfg.OUTPUT_DIR).resolve() / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        self.run = self.client.create_run(experiment_id, run_name=Path(cfg.OUTPUT_DIR).name)
        run_id = self.run.info.run_id
        params = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in flat_config(cfg).items()]
        for first in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=params[first:first + 100])
        self.client.log_text(run_id, cfg.dump(), "config.yaml")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        import mlflow

        metrics = [mlflow.entities.Metric(self.metric_name(k), float(v), mlflow.utils.time.get_current_time_millis(),
                                          step) for k, v in values.items()]
        for first in range(0, len(metrics), 1000):
            self.client.log_batch(self.run.info.run_id, metrics=metrics[first:first + 1000])

    def log_evaluation(self, summary: dict[str, Any], step: int) -> None:
        self.log_scalars({**scalars(summary), **per_class_scalars(summary)}, step)
        run_id = self.run.info.run_id
        if summary.get("per_class"):
            self.client.log_dict(run_id, summary["per_class"], f"eval/per_class_{step:07d}.json")
        for path in figures(summary).values():
            self.client.log_artifact(run_id, str(path), f"eval/{step:07d}")

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.client.set_terminated(self.run.info.run_id, "FAILED" if failed else "FINISHED")

    @staticmethod
    def metric_name(name: str) -> str:
        return re.sub(r"[^\w\-. /]", "_", name)


class WandbTracker(TrackerHook):
    """One Weights & Biases run per training start in ``project`` (TRACKER.WANDB.PROJECT), its files under
    OUTPUT_DIR/wandb; WANDB_MODE=offline keeps it local (``wandb sync`` uploads it later). The config as the run's
    config, scalars by step, each evaluation's ``per_class`` as a table and its pictures as images."""

    def __init__(self, project: str, entity: str, log_period: int):
        super().__init__(log_period)
        self.project, self.entity = project, entity
        self.run = None

    def start(self, cfg: CfgNode) -> None:
        import wandb

        self.run = wandb.init(project=self.project, entity=self.entity or None, dir=str(cfg.OUTPUT_DIR),
                              name=Path(cfg.OUTPUT_DIR).name, config=flat_config(cfg), reinit="create_new")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def log_evaluation(self, summary: dict[str, Any], step: int) -> None:
        import wandb

        logged: dict[str, Any] = {**scalars(summary), **per_class_scalars(summary)}
        per_class = summary.get("per_class") or {}
        if per_class:
            columns = sorted({key for results in per_class.values() for key in results})
            logged["eval/per_class"] = wandb.Table(columns=["class", *columns], data=[
                [name, *(results.get(key) for key in columns)] for name, results in per_class.items()])
        logged |= {f"eval_figures/{name}": wandb.Image(str(path)) for name, path in figures(summary).items()}
        self.run.log(logged, step=step)

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)


def build_trackers(cfg: CfgNode) -> list[TrackerHook]:
    """The tracker hooks TRACKERS names; a ConfigError for an unknown name or a missing package."""
    hooks: list[TrackerHook] = []
    for name in cfg.TRACKERS:
        check_choice("TRACKERS", name, list(TRACKER_PACKAGES))
        require_package(name)
        if name == "mlflow":
            hooks.append(MLflowTracker(cfg.TRACKER.MLFLOW.URI, cfg.TRACKER.MLFLOW.EXPERIMENT, cfg.LOG_PERIOD))
        else:
            hooks.append(WandbTracker(cfg.TRACKER.WANDB.PROJECT, cfg.TRACKER.WANDB.ENTITY, cfg.LOG_PERIOD))
    return hooks

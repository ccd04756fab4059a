"""``od2.Detector``: a trained model as an object in Python.

    from od2 import Detector
    detector = Detector.from_run("output/bccd")               # the run's best (else final) weights and config
    result = detector("blood.jpg")                            # a path, PIL image, HxWx3 uint8 array or CHW tensor
    result.boxes, result.scores, result.names                 # XYXY in the image's own pixels
    results = detector([frame1, frame2], score_thresh=0.5)    # a list is run in batches
    Image.fromarray(result.draw()).save("drawn.png")

Every input goes through the same :class:`~od2.evaluation.pipeline.InferencePipeline` as ``od2 eval`` and
``od2 predict``: the config's test resize, test-time augmentation (TEST.AUG) or sliced inference (TEST.SLICE).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from od2.config import CfgNode, ConfigError, load_config, parse_overrides
from od2.config.config import merge_into
from od2.data.image_io import read_image
from od2.engine.checkpoint import load_checkpoint, load_model_weights
from od2.engine.setup import resolve_device
from od2.evaluation.detections import Detections
from od2.evaluation.pipeline import InferencePipeline
from od2.evaluation.predict import checkpoint_category_ids, checkpoint_class_names
from od2.modeling.build import build_model

__all__ = ["Detector", "ImageInput", "load_trained_model", "weights_to_load"]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def weights_to_load(weights: str | None, cfg: CfgNode) -> str:
    """The weights to load for inference: ``weights``, else the run's ``OUTPUT_DIR/model_final.pth`` when it exists,
    else MODEL.WEIGHTS (which, in a config that trains from ImageNet weights, names only a backbone: a trained run's
    own model comes first), else ``model_final.pth`` anyway, so that the error names it."""
    final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    if weights:
        return weights
    return str(final) if final.is_file() or not cfg.MODEL.WEIGHTS else cfg.MODEL.WEIGHTS


def load_trained_model(cfg: CfgNode, weights: str, prefer_ema: bool = True
                       ) -> tuple[torch.nn.Module, list[str], list[int]]:
    """(model on CPU in eval mode with the checkpoint's weights, its class names, their category ids).

    ``weights``: a file or any weights name MODEL.WEIGHTS accepts. The class names come from the checkpoint (od2
    training checkpoints hold them), else MODEL.RETINANET.NUM_CLASSES or the class predictor's size."""
    anchors = cfg.MODEL.ANCHOR_GENERATOR
    num_anchors = len(anchors.SIZES[0]) * len(anchors.ASPECT_RATIOS[0])
    checkpoint = load_checkpoint(weights)
    try:
        class_names = checkpoint_class_names(checkpoint, num_anchors, cfg.MODEL.RETINANET.NUM_CLASSES)
    except ValueError as exc:
        raise ConfigError(f"{weights}: {exc}") from exc
    # every weight comes from the checkpoint (require_all), so the backbone's ImageNet file is neither needed nor read
    untrained = CfgNode(copy.deepcopy(cfg.to_dict()))
    untrained.MODEL.BACKBONE.PRETRAINED = False
    model = build_model(untrained, len(class_names))
    load_model_weights(model, weights, require_all=True, prefer_ema=prefer_ema, checkpoint=checkpoint)
    return model.eval(), class_names, checkpoint_category_ids(checkpoint, len(class_names))


def run_weights(run_dir: Path, which: str) -> Path:
    """The weights file of a training run: ``best`` (model_best.pth, else model_final.pth), ``final``
    (model_final.pth) or a file name inside the run folder."""
    candidates = {"best": ["model_best.pth", "model_final.pth"], "final": ["model_final.pth"]}.get(which, [which])
    for name in candidates:
        if (run_dir / name).is_file():
            return run_dir / name
    present = sorted(p.name for p in run_dir.glob("*.pth"))
    hint = (f"it holds {', '.join(present)}: name one with weights=" if present else
            "it holds no checkpoint: has the run finished? (`od2 train --resume` continues it)")
    raise FileNotFoundError(f"{run_dir} has no {' or '.join(candidates)}; {hint}")


def as_rgb_array(image: ImageInput, bgr: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """An image input as uint8 [H, W, 3] RGB.

    - a path: decoded with od2's reader (stored pixel order, EXIF orientation not applied, as in training);
    - a PIL image: converted to RGB;
    - a uint8 array [H, W, 3] (RGB, or BGR with ``bgr``, as OpenCV gives) or [H, W] (grayscale);
    - a tensor [3, H, W]: uint8 in 0..255 or floating point in 0..1 (torchvision's convention); BGR with ``bgr``.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be [3, H, W], got shape {list(image.shape)}")
        if image.is_floating_point():
            if image.numel() and (image.min() < 0 or image.max() > 1):
                raise ValueError("a floating point tensor image must hold values in [0, 1] (torchvision's "
                                 f"convention), got [{float(image.min()):.3g}, {float(image.max()):.3g}]")
            image = (image * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise ValueError(f"a tensor image must be uint8 or floating point, got {image.dtype}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"an array image must be uint8, got {image.dtype} (scale floats to 0..255 first)")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an array image must be [H, W, 3] (or [H, W] grayscale), got shape {image.shape}")
        array = image
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}: pass a path, a PIL image, a uint8 "
                        "[H, W, 3] array or a [3, H, W] tensor")
    return np.ascontiguousarray(array[:, :, ::-1]) if bgr else array


class Detector:
    """A trained detector: call it on images to get :class:`~od2.evaluation.detections.Detections`.

    Build it with :meth:`from_run` or :meth:`from_config`; or from a model in memory with its config and class names.

    Attributes:
        cfg: the config (test sizes, TEST.AUG, TEST.SLICE, score threshold and detections per image).
        pipeline: the inference pipeline every input goes through.
        class_names: one per label.
        device: where the model runs.
    """

    def __init__(self, model: torch.nn.Module, cfg: CfgNode, class_names: Sequence[str],
                 category_ids: Sequence[int] | None = None, device: torch.device | str | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.MODEL.DEVICE) if device is None else torch.device(device)
        self.pipeline = InferencePipeline(cfg, model.to(self.device).eval(), class_names, category_ids, self.device)

    @property
    def class_names(self) -> list[str]:
        return self.pipeline.class_names

    @property
    def model(self) -> torch.nn.Module:
        return self.pipeline.model

    def __repr__(self) -> str:
        return (f"Detector({type(self.model).__name__}, {len(self.class_names)} classes, device={self.device}, "
                f"test size {self.pipeline.min_size or 'original'}/{self.pipeline.max_size})")

    @classmethod
    def from_config(cls, config: str | os.PathLike | CfgNode, weights: str | None = None,
                    device: torch.device | str | None = None, overrides: Sequence[str] = ()) -> Detector:
        """A detector from a config file (or a packaged config's name, or a CfgNode) and weights.

        Args:
            config: YAML file, packaged name (``coco/RetinaNet-GN``) or a loaded config.
            weights: a file or any weights name MODEL.WEIGHTS accepts (``torchvision://...``, ``https://...``);
                default: the config's OUTPUT_DIR/model_final.pth when it exists, else MODEL.WEIGHTS.
            device: default MODEL.DEVICE ("auto": CUDA when available).
            overrides: ``KEY=VALUE`` config overrides (e.g. ``TEST.AUG.ENABLED=True``).
        """
        if isinstance(config, CfgNode):
            cfg = CfgNode(copy.deepcopy(config.to_dict()))
            merge_into(cfg, parse_overrides(overrides), "overrides")
        else:
            cfg = load_config(config, overrides)
        model, class_names, category_ids = load_trained_model(cfg, weights_to_load(weights, cfg))
        return cls(model, cfg, class_names, category_ids, device)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, weights: str = "best", device: torch.device | str | None = None,
                 overrides: Sequence[str] = ()) -> Detector:
        """A detector from a training run folder: its ``config.yaml`` and its ``model_best.pth`` (the best
        evaluation, TEST.BEST_METRIC), else ``model_final.pth``.

        Args:
            run_dir: the run's OUTPUT_DIR.
            weights: ``best``, ``final``, or a checkpoint file name inside the run folder.
            device: default the run config's MODEL.DEVICE.
            overrides: ``KEY=VALUE`` config overrides (e.g. ``TEST.SLICE.ENABLED=True``).
        """
        run_dir = Path(run_dir)
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{run_dir} is not an od2 run folder: it has no config.yaml")
        return cls.from_config(config, str(run_weights(run_dir, weights)), device,
                               [*overrides, f"OUTPUT_DIR={run_dir}"])

    def __call__(self, images: ImageInput | Sequence[ImageInput], score_thresh: float | None = None,
                 bgr: bool = False) -> Detections | list[Detections]:
        """Detections of one image, or of each image of a list (run in batches of TEST.IMS_PER_BATCH).

        Args:
            images: a path, PIL image, uint8 [H, W, 3] array (RGB), [3, H, W] tensor, or a list of these; a
                [B, 3, H, W] tensor is a list of B images.
            score_thresh: keep detections with at least this score (default: all the model returns, down to
                MODEL.RETINANET.SCORE_THRESH_TEST).
            bgr: arrays and tensors hold BGR (OpenCV's order) instead of RGB.

        Returns:
            ``Detections`` (boxes XYXY in the image's own pixels, scores, labels, names; ``.draw()``,
            ``.to_coco(image_id)``, ``.above(score)``) for one image, a list for a list.
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.ndim == 4)
        inputs = [images] if single else list(images)
        arrays = [as_rgb_array(image, bgr, self.pipeline.max_pixels) for image in inputs]
        results = self.pipeline.detect_images(arrays)
        if score_thresh is not None:
            results = [result.above(score_thresh) for result in results]
        return results[0] if single else results

    def info(self) -> dict[str, Any]:
        """What a log or a web page shows about the detector: classes, test sizes, the test-time mode."""
        cfg = self.cfg
        mode = "tta" if cfg.TEST.AUG.ENABLED else "sliced" if cfg.TEST.SLICE.ENABLED else "plain"
        return {"classes": self.class_names, "min_size_test": self.pipeline.min_size,
                "max_size_test": self.pipeline.max_size, "mode": mode, "device": str(self.device)}

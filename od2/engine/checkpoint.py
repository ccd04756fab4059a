"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``.

A training checkpoint holds the model ("model"), the optimizer, the next iteration to run and the torch RNG
states, the fp16 GradScaler state ("scaler") when enabled, and every trainer hook's ``state_dict()`` entries (the
EMA weights "ema", "ema_updates"; the Stitcher feed's "feed_*"; see :mod:`od2.engine.hooks`). The sampler's data
order is a pure function of (seed, iteration) and needs no state.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from od2.modeling.torchvision_retinanet import FROZEN_BN_EPS, convert_torchvision_retinanet, is_torchvision_retinanet
from od2.utils.atomic_write import atomic_write
from od2.utils.weight_files import resolve_weights

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"
# The entries save_training_checkpoint writes itself; the caller's extra entries need other keys.
TRAINING_CHECKPOINT_KEYS = ("model", "optimizer", "iteration", "rng")
# The periodic and final checkpoints --resume may fall back to; model_nonfinite_*.pth is left out on purpose.
RESUMABLE_NAME = re.compile(r"model_(\d{7}|final)\.pth")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save so that a crash mid-write never leaves a truncated file at ``path``.

    Raises:
        OSError: the write failed (full disk, file-size limit, read-only folder); it names ``path`` and the OS
            reason, and the file at ``path`` is left as it was.
    """
    with atomic_write(path) as tmp:
        try:
            with open(tmp, "wb") as file:  # a Python file: the OSError of a failed write reaches us
                torch.save(obj, file)
        except RuntimeError as error:  # torch's writer reports it as "unexpected pos N vs M"
            cause = _os_error_behind(error)
            if cause is None:
                raise
            raise cause from error


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError among ``error``'s causes and contexts, if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only: GPU counts may differ on resume
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_training_checkpoint(output_dir: str | Path, name: str, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, iteration: int, point: bool = True,
                             **extra: Any) -> Path:
    """Write ``output_dir/name`` and, with ``point``, point ``output_dir/last_checkpoint`` at it. Returns the path."""
    path = Path(output_dir) / name
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "iteration": iteration, "rng": rng_state(), **extra}, path)
    if point:
        point_last_checkpoint(output_dir, name)
    return path


def point_last_checkpoint(output_dir: str | Path, name: str | None) -> None:
    """Make ``output_dir/last_checkpoint`` name ``name`` (atomically), or remove it when ``name`` is None."""
    pointer = Path(output_dir) / LAST_CHECKPOINT
    if name is None:
        pointer.unlink(missing_ok=True)
        return
    with atomic_write(pointer) as tmp:
        tmp.write_text(name)


def set_aside_nonfinite(output_dir: str | Path, iteration: int, nonfinite: Path) -> Path | None:
    """After step ``iteration``'s loss was not finite, make sure ``--resume`` does not start from its state again.

    ``nonfinite`` holds the state before that step. A periodic checkpoint of the same iteration holds that state
    too (taken before the step's batch, the exact one to replay): it replaces ``nonfinite``, so that neither
    ``last_checkpoint`` nor the fallback of :func:`load_resume_checkpoint` finds it. ``last_checkpoint`` then
    names the newest periodic checkpoint before ``iteration``, or is removed when there is none.

    Returns:
        The checkpoint ``last_checkpoint`` names now, or None.
    """
    output_dir = Path(output_dir)
    same_state = output_dir / f"model_{iteration:07d}.pth"
    if same_state.is_file():
        os.replace(same_state, nonfinite)
    earlier = [p for p in resumable_checkpoints(output_dir) if p.stem[6:].isdigit() and int(p.stem[6:]) < iteration]
    point_last_checkpoint(output_dir, earlier[0].name if earlier else None)
    return earlier[0] if earlier else None


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, or None when there is none."""
    pointer = Path(output_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    path = Path(output_dir) / pointer.read_text().strip()
    return path if path.is_file() else None


def resumable_checkpoints(output_dir: str | Path) -> list[Path]:
    """The folder's periodic checkpoints and ``model_final.pth``, newest first: ``model_final.pth``, then by
    iteration. The states saved before a non-finite loss are left out (see :class:`NonFiniteLossError`)."""
    found = [p for p in Path(output_dir).glob("model_*.pth") if RESUMABLE_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name.replace("final", "9" * 8), reverse=True)


def load_resume_checkpoint(output_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``--resume`` continues from, loaded: the one ``last_checkpoint`` names, else the newest
    readable one of :func:`resumable_checkpoints` (a warning says which and why). None when the folder holds
    neither a pointer nor a checkpoint (a fresh start).

    Raises:
        RuntimeError: the folder held checkpoints (or a pointer) but none of them is readable; starting from
            iteration 0 instead would overwrite them.
    """
    output_dir = Path(output_dir)
    pointer = output_dir / LAST_CHECKPOINT
    named, problems = None, []
    if pointer.is_file():
        named = output_dir / pointer.read_text().strip()
        try:
            return named, load_checkpoint(named)
        except (FileNotFoundError, RuntimeError) as exc:
            problems.append(f"{LAST_CHECKPOINT} names {named.name}, which is missing" if not named.is_file()
                            else str(exc))
    for path in resumable_checkpoints(output_dir):
        if path == named:
            continue
        try:
            state = load_checkpoint(path)
        except RuntimeError as exc:
            problems.append(str(exc))
            continue
        logger.warning("--resume: %s; resuming from %s, the newest readable checkpoint in %s", "; ".join(problems)
                       or f"no {LAST_CHECKPOINT} file", path.name, output_dir)
        return path, state
    if not problems:
        return None
    raise RuntimeError(f"--resume: no readable checkpoint in {output_dir} ({'; '.join(problems)}). Restore a "
                       "checkpoint there, or start afresh on purpose with --overwrite (it deletes them).")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict; plain state_dicts (no "model" key) are wrapped as {"model": state_dict}, and a torchvision
    RetinaNet's state_dict becomes the od2 checkpoint of its configs/coco/torchvision layout.

    ``path`` is a local file or a weights name (``torchvision://``, ``https://``, ``file://``, ``package://``;
    :func:`od2.utils.weight_files.resolve_weights`), downloaded into torch's hub cache when not there yet.
    """
    path = resolve_weights(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RuntimeError(f"{path} does not hold a state_dict or an od2 checkpoint")
    if is_torchvision_retinanet(data):
        return torchvision_retinanet_checkpoint(data, path)
    return data if "model" in data else {"model": data}


def torchvision_retinanet_checkpoint(state_dict: dict[str, Any], path: Path) -> dict[str, Any]:
    """A torchvision RetinaNet state_dict read from ``path`` as an od2 checkpoint (``model``, and for COCO weights
    ``class_names`` and ``category_ids``); see :mod:`od2.modeling.torchvision_retinanet`."""
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    # torchvision runs this one file's FrozenBN with eps 0 (its overwrite_eps), every other RetinaNet with 1e-5
    v1_coco = path.name == Path(RetinaNet_ResNet50_FPN_Weights.COCO_V1.url).name
    try:
        checkpoint = convert_torchvision_retinanet(state_dict, backbone_bn_eps=0.0 if v1_coco else FROZEN_BN_EPS)
    except ValueError as exc:
        raise RuntimeError(f"{path}: {exc}") from exc
    logger.info("%s: torchvision RetinaNet weights, %d tensors mapped to od2's layout%s", path,
                len(checkpoint["model"]), ", class predictor reduced to COCO's 80 classes"
                if "category_ids" in checkpoint else "")
    return checkpoint


def load_model_weights(model: torch.nn.Module, path: str | Path, require_all: bool = False,
                       prefer_ema: bool = True, checkpoint: dict[str, Any] | None = None) -> None:
    """Load the weights of a checkpoint or state_dict into ``model``, logging missing/unexpected keys.

    A training checkpoint of a run with MODEL.EMA holds two sets: the raw weights under "model" and the EMA
    weights under "ema"; ``prefer_ema`` loads the EMA ones when present (the log says which set was loaded).
    With ``require_all`` a key of the model missing from the file is an error (evaluating half-random weights
    would print plausible-looking numbers). ``checkpoint``: ``path`` already read by :func:`load_checkpoint`
    (callers that first read its class names), so that the file is not read and converted twice.
    """
    data = load_checkpoint(path) if checkpoint is None else checkpoint
    use_ema = prefer_ema and "ema" in data
    result = model.load_state_dict(data["ema" if use_ema else "model"], strict=False)
    if require_all and result.missing_keys:
        raise RuntimeError(f"{path} lacks {len(result.missing_keys)} of the model's weights (e.g. "
                           f"{result.missing_keys[:3]}): is it a checkpoint of this config's model?")
    if result.missing_keys:
        logger.warning("%s: %d model keys not in the file, e.g. %s", path, len(result.missing_keys),
                       result.missing_keys[:5])
    if result.unexpected_keys:
        logger.warning("%s: %d keys in the file unused by the model, e.g. %s", path, len(result.unexpected_keys),
                       result.unexpected_keys[:5])
    if use_ema:
        which = f"the EMA weights (after {data.get('ema_updates', '?')} updates)"
    elif "ema" in data:
        which = "the raw weights (prefer_ema=False; the file also holds EMA weights)"
    else:
        which = "the weights (no EMA weights in the file)"
    logger.info("loaded %s from %s", which, path)

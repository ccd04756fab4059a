"""Run a model over a test loader and collect COCO-format detections (gathered from every rank)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from od2.utils import comm as dist


@dataclass
class InferenceResult:
    detections: list[dict]  # COCO results format, original-image pixels, every rank's images
    num_images: int
    model_seconds: float  # summed forward + postprocess time over all images (after warm-up), all ranks
    timed_images: int
    skipped: list[dict] = dataclasses.field(default_factory=list)  # images that failed to decode: image_id,
    # file_name, reason (the test loader's skipped_images), every rank's
    losses: dict[str, float] = dataclasses.field(default_factory=dict)  # with losses=True: each loss_* entry and
    # total_loss, the image-weighted mean of the batches' losses over every rank's images

    @property
    def seconds_per_image(self) -> float:
        return self.model_seconds / max(self.timed_images, 1)


def to_coco_results(result: dict[str, torch.Tensor], image_id: int, scale_yx: tuple[float, float],
                    category_ids: list[int]) -> list[dict]:
    """One image's detections (resized-image XYXY) -> COCO results (original-image XYWH)."""
    sy, sx = scale_yx
    boxes = result["boxes"].float().cpu() * torch.tensor([sx, sy, sx, sy])
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = result["scores"].float().cpu().tolist()
    labels = result["labels"].cpu().tolist()
    return [{"image_id": image_id, "category_id": category_ids[label], "bbox": [round(v, 3) for v in box],
             "score": round(score, 5)} for box, score, label in zip(xywh, scores, labels)]


@torch.no_grad()
def run_inference(model: torch.nn.Module, loader, device: torch.device, category_ids: list[int],
                  warmup_batches: int = 2, progress: bool = True, losses: bool = False) -> InferenceResult:
    """Detections for every image of ``loader`` (this rank's shard), then gathered over ranks.

    With ``losses`` (a model with RetinaNet's ``raw_outputs``, ``postprocess`` and ``losses``), also the training
    losses against the loader's boxes from the same forward, untimed: in eval mode (norms use their running
    statistics and update nothing) on the test transforms, consuming no random numbers. Crowd boxes count as
    objects (the test loader keeps them).

    The model time covers host-to-device copy, forward and postprocess, with the device synchronised,
    and skips the first ``warmup_batches`` batches (allocator and kernel warm-up). Images the loader skipped (they
    failed to decode) are collected in ``skipped`` and not counted in ``num_images``.
    """
    was_training = model.training
    model.eval()
    detections: list[dict] = []
    skipped: list[dict] = []
    seconds, timed, count = 0.0, 0, 0
    loss_sums: dict[str, float] = {}
    bar = tqdm(loader, desc="inference", unit="batch", disable=not (progress and dist.is_main_process()),
               dynamic_ncols=True)
    for batch_idx, batch in enumerate(bar):
        skipped.extend(batch.get("skipped_images", ()))
        if not batch["image_ids"]:  # every image of the batch was skipped
            continue
        sync(device)
        start = time.perf_counter()
        images = batch["images"].to(device, non_blocking=True)  # asynchronous from a pinned batch
        image_sizes = batch["image_sizes"].to(device, non_blocking=True)
        if losses:
            raw = model.raw_outputs(model.normalize(images))
            outputs = model.postprocess(*raw, image_sizes)
        else:
            outputs = model(images, image_sizes)
        sync(device)
        if batch_idx >= warmup_batches:
            seconds += time.perf_counter() - start
            timed += len(outputs)
        if losses:
            batch_losses = model.losses(*raw, [b.to(device) for b in batch["boxes"]],
                                        [lab.to(device) for lab in batch["labels"]], image_sizes)
            batch_losses["total_loss"] = sum(v for k, v in batch_losses.items() if k.startswith("loss_"))
            for key, value in batch_losses.items():
                if key.startswith("loss_") or key == "total_loss":  # not statistics such as small_box_loss_share
                    loss_sums[key] = loss_sums.get(key, 0.0) + float(value) * len(outputs)
        for i, output in enumerate(outputs):
            (h, w), (orig_h, orig_w) = batch["image_sizes"][i].tolist(), batch["orig_sizes"][i].tolist()
            detections.extend(to_coco_results(output, int(batch["image_ids"][i]), (orig_h / h, orig_w / w),
                                              category_ids))
        count += len(outputs)
    model.train(was_training)
    gathered = dist.all_gather_objects((detections, count, seconds, timed, skipped, loss_sums))
    num_images = sum(part[1] for part in gathered)
    return InferenceResult(
        detections=[d for part in gathered for d in part[0]],
        num_images=num_images,
        model_seconds=sum(part[2] for part in gathered),
        timed_images=sum(part[3] for part in gathered),
        skipped=[s for part in gathered for s in part[4]],
        losses={key: sum(part[5].get(key, 0.0) for part in gathered) / max(num_images, 1) for key in
                {k for part in gathered for k in part[5]}},
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

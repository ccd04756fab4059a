"""Run an inference pipeline over a test loader and collect COCO-format detections (gathered from every rank)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from od2.utils import comm as dist

from .pipeline import InferencePipeline


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


@torch.no_grad()
def run_inference(pipeline: InferencePipeline, loader, warmup_batches: int = 2, progress: bool = True,
                  losses: bool = False) -> InferenceResult:
    """Detections for every image of ``loader`` (this rank's shard, resized as ``pipeline.resize`` says), then
    gathered over ranks, in COCO results format with the pipeline's category ids.

    With ``losses`` (needs ``pipeline.computes_losses``), also the training losses against the loader's boxes from
    the same forward, untimed: in eval mode (norms use their running statistics and update nothing) on the test
    transforms, consuming no random numbers. Crowd boxes count as objects (the test loader keeps them).

    The model time covers host-to-device copy, forward, postprocess and the mapping back to original pixels, with
    the device synchronised, and skips the first ``warmup_batches`` batches (allocator and kernel warm-up). Images
    the loader skipped (they failed to decode) are collected in ``skipped`` and not counted in ``num_images``.
    """
    model, device = pipeline.model, pipeline.device
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
        results, batch_losses = pipeline.detect_batch(batch, losses=losses)
        sync(device)
        if batch_idx >= warmup_batches:
            seconds += time.perf_counter() - start
            timed += len(results)
        if batch_losses is not None:
            batch_losses["total_loss"] = sum(v for k, v in batch_losses.items() if k.startswith("loss_"))
            for key, value in batch_losses.items():
                if key.startswith("loss_") or key == "total_loss":  # not statistics such as small_box_loss_share
                    loss_sums[key] = loss_sums.get(key, 0.0) + float(value) * len(results)
        for image_id, result in zip(batch["image_ids"], results):
            detections.extend(result.to_coco(int(image_id)))
        count += len(results)
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

"""RetinaNet inference: top-k per level, score threshold, decode, class-wise NMS, batched over images.

Original-spec §3.9: per level keep the ``topk`` highest of the A*K sigmoid scores, drop those below
``score_thresh``, decode and clip to the image, concatenate levels, class-wise NMS at ``nms_thresh``,
keep the best ``max_detections``. All images of a batch go through one batched NMS call.
"""

from __future__ import annotations

import torch
from torch.onnx.operators import shape_as_tensor
from torchvision.ops import batched_nms

from .box_coder import BoxCoder

CHUNK = 1 << 20


def chunked_topk(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``values.topk(min(k, N), dim=1)`` for values [B, N], sorted; on the CPU several times faster for long rows.

    A long row (the P3 level of a 576x768 image with 80 classes has 5M scores) is cut into chunks of at most
    ``CHUNK`` values: on the 2-core CPU here topk takes 3 ms over 1M values but 21 ms over 2M (the row leaves the
    cache). The top k of each chunk are candidates, and the top k of the candidates are the row's. Equal values
    may come in another order than one ``topk`` gives them. GPUs take the single ``topk``.
    """
    batch, n = values.shape
    if torch.jit.is_tracing():  # an exported graph of dynamic size: k from the traced row length, one TopK
        return values.topk(shape_as_tensor(values)[1].clamp(max=k), dim=1)
    k = min(k, n)
    chunks = -(-n // CHUNK)
    length = n // chunks
    if chunks < 2 or length < k or values.device.type != "cpu":
        return values.topk(k, dim=1)
    body = values[:, : chunks * length].view(batch, chunks, length)
    top_values, top_idx = body.topk(k, dim=2)  # [B, chunks, k]
    top_idx = top_idx + torch.arange(0, chunks * length, length, device=values.device).view(1, -1, 1)
    candidates, candidate_idx = top_values.flatten(1), top_idx.flatten(1)
    if chunks * length < n:  # the tail that does not fill a chunk stays a candidate as a whole
        candidates = torch.cat([candidates, values[:, chunks * length:]], dim=1)
        tail_idx = torch.arange(chunks * length, n, device=values.device).expand(batch, -1)
        candidate_idx = torch.cat([candidate_idx, tail_idx], dim=1)
    best, pick = candidates.topk(k, dim=1)
    return best, candidate_idx.gather(1, pick)


def detect(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
           image_sizes: torch.Tensor, box_coder: BoxCoder, *, score_thresh: float, topk: int,
           nms_thresh: float, max_detections: int) -> list[dict[str, torch.Tensor]]:
    """Detections per image.

    Args:
        logits: per level [B, N_l, K]; deltas: per level [B, N_l, 4]; anchors: per level [N_l, 4].
        image_sizes: int [B, 2] (h, w) of each image's content, for clipping.
    Returns:
        per image dict(boxes float [M, 4] XYXY, scores float [M], labels int64 [M]), M <= max_detections,
        sorted by decreasing score.
    """
    flat = detect_flat(logits, deltas, anchors, image_sizes, box_coder, score_thresh=score_thresh, topk=topk,
                       nms_thresh=nms_thresh, max_detections=max_detections)
    return split_by_image(flat, image_sizes.shape[0])


def split_by_image(flat: dict[str, torch.Tensor], batch: int) -> list[dict[str, torch.Tensor]]:
    """:func:`detect_flat`'s output -> per image dict(boxes, scores, labels), in the flat order."""
    index = flat["image_index"]
    return [{key: flat[key][index == i] for key in ("boxes", "scores", "labels")} for i in range(batch)]


def detect_flat(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                image_sizes: torch.Tensor, box_coder: BoxCoder, *, score_thresh: float, topk: int,
                nms_thresh: float, max_detections: int) -> dict[str, torch.Tensor]:
    """The detections of a whole batch as flat tensors, with no Python loop over images (so an exported graph
    keeps the batch size dynamic): dict(boxes float [N, 4] XYXY, scores [N], labels int64 [N], image_index int64
    [N]), grouped by image in batch order and by decreasing score within an image, at most ``max_detections`` per
    image. Arguments as :func:`detect`."""
    batch = image_sizes.shape[0]
    num_classes = logits[0].shape[-1]
    all_boxes, all_scores, all_labels, all_images = [], [], [], []
    for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
        # the sigmoid is monotonic: select on logits, then score only the k selected
        top_logits, top_idx = chunked_topk(level_logits.detach().flatten(1), topk)  # [B, k]
        top_scores = top_logits.float().sigmoid()
        keep = top_scores > score_thresh
        image_idx = torch.arange(batch, device=top_idx.device)[:, None].expand_as(top_idx)[keep]
        top_idx, top_scores = top_idx[keep], top_scores[keep]
        anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
        boxes = box_coder.decode(level_anchors[anchor_idx], level_deltas.detach()[image_idx, anchor_idx])
        all_boxes.append(boxes)
        all_scores.append(top_scores)
        all_labels.append(top_idx % num_classes)
        all_images.append(image_idx)
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    labels, images = torch.cat(all_labels), torch.cat(all_images)
    sizes = image_sizes.to(boxes.device, boxes.dtype)[images]  # [M, 2] (h, w)
    boxes = torch.stack([boxes[:, 0].clamp(min=0).minimum(sizes[:, 1]), boxes[:, 1].clamp(min=0).minimum(sizes[:, 0]),
                         boxes[:, 2].clamp(min=0).minimum(sizes[:, 1]), boxes[:, 3].clamp(min=0).minimum(sizes[:, 0])],
                        dim=1)
    keep = batched_nms(boxes, scores, images * num_classes + labels, nms_thresh)  # sorted by score
    images_kept = images[keep]
    # rank of each kept detection within its image (0 = its best), by a running count per image
    per_image = images_kept[:, None] == torch.arange(batch, device=keep.device)[None]  # [M, B]
    rank = per_image.long().cumsum(0).gather(1, images_kept[:, None])[:, 0] - 1
    keep, images_kept = keep[rank < max_detections], images_kept[rank < max_detections]
    # group by image and keep the score order inside each: the keys are distinct, so any sort is stable here
    position = torch.arange(keep.shape[0], device=keep.device)
    order = (images_kept * (keep.shape[0] + 1) + position).argsort()
    keep = keep[order]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep], "image_index": images[keep]}

"""RetinaNet inference: top-k per level, score threshold, decode, class-wise NMS, batched over images.

Original-spec §3.9: per level keep the ``topk`` highest of the A*K sigmoid scores, drop those below
``score_thresh``, decode and clip to the image, concatenate levels, class-wise NMS at ``nms_thresh``,
keep the best ``max_detections``. All images of a batch go through one batched NMS call.

Two implementations give the same detections. :func:`detect_flat` (the CPU path and the ONNX export) keeps only
the candidates above the threshold and calls torchvision's ``batched_nms``: shapes depend on the data, which costs
nothing on the CPU. :func:`detect_padded` (GPUs, ``torch.compile``, CUDA graphs) never leaves the device: every
tensor has a shape fixed by the input's, candidates below the threshold score ``-inf`` instead of being dropped,
and the greedy NMS is computed as the fixed point of Cluster-NMS (Zheng et al. 2020) on the ``[B, C, C]``
suppression matrix; one host sync at the very end (:func:`unpad`) turns its padded ``[B, D]`` output into lists.
"""

from __future__ import annotations

import torch
from torch.onnx.operators import shape_as_tensor
from torchvision.ops import batched_nms

from .box_coder import BoxCoder

CHUNK = 1 << 20

# Cluster-NMS rounds of detect_padded: a round resolves one more link of the longest chain of suppressions. The
# trained digits model's test images needed at most 8 (7 and one that confirms the fixed point); a batch whose
# last round still changed something is redone through detect_flat (RetinaNet.postprocess), so results stay exact.
NMS_ROUNDS = 16


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


def detect_padded(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                  image_sizes: torch.Tensor, box_coder: BoxCoder, *, score_thresh: float, topk: int,
                  nms_thresh: float, max_detections: int, rounds: int = NMS_ROUNDS) -> dict[str, torch.Tensor]:
    """:func:`detect_flat`'s detections with no host sync: every shape follows from the inputs' shapes, so the
    whole function runs on the device, under ``torch.compile(fullgraph=True)`` and in a CUDA graph.

    Per level the ``topk`` best logits of each image are candidates; those scoring at most ``score_thresh`` get
    the score ``-inf`` instead of being dropped. The C candidates of an image (C = the levels' top-k summed) are
    sorted by score, and the class-wise greedy NMS is the fixed point of Cluster-NMS: ``keep[j]`` is true when no
    kept candidate before j in score order, of the same class, overlaps j by IoU > ``nms_thresh``. Starting from
    every valid candidate, each of ``rounds`` rounds recomputes ``keep`` from the last; the fixed point (reached
    after at most as many rounds as the longest chain of suppressions, a few on real outputs) is greedy NMS.
    Memory: the [B, C, C] suppression matrix, 25 MB of bools per image at C = 5000.

    Args: as :func:`detect`; ``rounds``: Cluster-NMS iterations.
    Returns:
        dict(boxes float [B, D, 4], scores float [B, D], labels int64 [B, D], count int64 [B], converged bool []),
        D = min(max_detections, C): each image's detections sorted by decreasing score in its first ``count``
        rows (scores ``-inf`` after them); ``converged`` is false when the last round still changed ``keep``
        (the detections may then keep boxes greedy NMS removes: :func:`unpad` says so).
    """
    num_classes = logits[0].shape[-1]
    level_boxes, level_scores, level_labels = [], [], []
    for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
        top_logits, top_idx = chunked_topk(level_logits.detach().flatten(1), topk)  # [B, k]
        top_scores = top_logits.float().sigmoid()
        level_scores.append(top_scores.masked_fill(top_scores <= score_thresh, float("-inf")))
        anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
        picked = level_deltas.detach().gather(1, anchor_idx[..., None].expand(-1, -1, 4))  # [B, k, 4]
        level_boxes.append(box_coder.decode(level_anchors[anchor_idx], picked))
        level_labels.append(top_idx % num_classes)
    scores, order = torch.cat(level_scores, dim=1).sort(dim=1, descending=True, stable=True)  # [B, C]
    boxes = torch.cat(level_boxes, dim=1).gather(1, order[..., None].expand(-1, -1, 4))  # [B, C, 4]
    labels = torch.cat(level_labels, dim=1).gather(1, order)
    limits = image_sizes.to(boxes.device, boxes.dtype).flip(-1).repeat(1, 2)[:, None]  # [B, 1, 4] as (w, h, w, h)
    boxes = boxes.clamp(min=0).minimum(limits)
    valid = scores > float("-inf")
    suppresses = _suppression_matrix(boxes, labels, nms_thresh)  # [B, C, C]
    keep, converged = valid, torch.ones((), dtype=torch.bool, device=valid.device)
    for _ in range(rounds):
        new_keep = valid & ~(suppresses & keep[:, :, None]).any(dim=1)
        converged = (new_keep == keep).all()
        keep = new_keep
    top_scores, pick = scores.masked_fill(~keep, float("-inf")).topk(min(max_detections, scores.shape[1]), dim=1)
    return {"boxes": boxes.gather(1, pick[..., None].expand(-1, -1, 4)), "scores": top_scores,
            "labels": labels.gather(1, pick), "count": (top_scores > float("-inf")).sum(dim=1),
            "converged": converged}


def _suppression_matrix(boxes: torch.Tensor, labels: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """bool [B, C, C]: ``[b, i, j]`` when candidate i comes before j (i < j) in the same class and their IoU
    exceeds ``iou_thresh``, computed as torchvision's NMS kernels compute it (so that the same pairs suppress)."""
    x1, y1, x2, y2 = boxes.unbind(-1)  # [B, C] each
    areas = (x2 - x1) * (y2 - y1)
    width = (x2[:, :, None].minimum(x2[:, None]) - x1[:, :, None].maximum(x1[:, None])).clamp(min=0)
    height = (y2[:, :, None].minimum(y2[:, None]) - y1[:, :, None].maximum(y1[:, None])).clamp(min=0)
    inter = width * height
    iou = inter / (areas[:, :, None] + areas[:, None] - inter)
    count = boxes.shape[1]
    later = torch.ones(count, count, dtype=torch.bool, device=boxes.device).triu(1)
    return (iou > iou_thresh) & (labels[:, :, None] == labels[:, None]) & later


def unpad(padded: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]] | None:
    """:func:`detect_padded`'s output -> per image dict(boxes [M, 4], scores [M], labels [M]) (copies, so that a
    CUDA graph's next replay cannot overwrite them), with the one host sync of the path; None when its NMS had not
    converged (the caller then takes :func:`detect_flat`)."""
    flags = torch.cat([padded["count"], padded["converged"].long()[None]]).tolist()
    if not flags[-1]:
        return None
    return [{key: padded[key][i, :count].clone() for key in ("boxes", "scores", "labels")}
            for i, count in enumerate(flags[:-1])]

"""RetinaNet meta-architecture: backbone -> neck -> shared head -> anchors, losses or detections.

Training and inference are separate methods (detectron2's DenseDetector): ``forward`` returns :meth:`losses`
when given targets and :meth:`inference` otherwise (the path ``od2.export`` also traces); the head and the
multi-level outputs (:meth:`raw_outputs`) are shared by both.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .losses import box_losses, dense_focal_loss_sum
from .matcher import NEGATIVE, POSITIVE, Matcher, batched_box_iou, pad_boxes
from .postprocess import detect, detect_flat, detect_padded, unpad
from .retinanet_head import RetinaNetHead


class RetinaNet(nn.Module):
    """RetinaNet (Lin et al. 2017) as object_detection2 builds it.

    Args:
        backbone: images [B, 3, H, W] (normalised) -> dict of C-levels.
        neck: C-levels -> dict of P-levels.
        head: list of P-levels -> per-level logits and deltas.
        in_features: the P-levels fed to the head, finest first.
        anchor_generator, box_coder, matcher: see their modules.
        pixel_mean, pixel_std: RGB, 0-255 scale; images arrive as uint8 (or float 0-255) and are
            normalised on the model's device.
        loss and test settings: as the MODEL.RETINANET config keys of the same names.
        channels_last: run the convolutions in NHWC memory layout (1.7x faster training on CPU here); the
            caller converts the module with ``.to(memory_format=torch.channels_last)``.
        small_box_area: when > 0, the training losses also report ``small_box_loss_share``: the share of the box
            regression loss that comes from ground-truth boxes with area below this (input pixels²), the
            feedback signal of the Stitcher data provider (Chen et al. 2020). Not a loss: it carries no gradient.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: RetinaNetHead, in_features: list[str],
                 anchor_generator: AnchorGenerator, box_coder: BoxCoder, matcher: Matcher,
                 pixel_mean: list[float], pixel_std: list[float], *, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, box_loss_type: str = "smooth_l1", smooth_l1_beta: float = 1.0,
                 box_loss_scale: float = 1.0, score_thresh: float = 0.05, topk_candidates: int = 1000,
                 nms_thresh: float = 0.5, max_detections: int = 100, channels_last: bool = False,
                 small_box_area: float = 0.0):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.in_features = list(in_features)
        self.anchor_generator, self.box_coder, self.matcher = anchor_generator, box_coder, matcher
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.box_loss_type, self.smooth_l1_beta, self.box_loss_scale = box_loss_type, smooth_l1_beta, box_loss_scale
        self.score_thresh, self.topk_candidates = score_thresh, topk_candidates
        self.nms_thresh, self.max_detections = nms_thresh, max_detections
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.small_box_area = small_box_area
        self.compiled_inference = None  # compile_inference() sets it

    def compile_inference(self, mode: str, canvas: tuple[int, int] | None = None) -> None:
        """Run :meth:`inference` through ``torch.compile(self.inference_padded, mode=mode)`` from now on (``mode``:
        torch.compile's, e.g. ``"reduce-overhead"`` for CUDA graphs). The graph is specialised to the input's
        shape: with ``canvas`` (H, W), smaller batches are zero-padded bottom/right to it first, so that every
        caller's images share one graph (the detections are then those of the eager model on the padded batch,
        which differ from a tighter padding's as any batch padding does: near the bottom/right edges the convs see
        the padding). Compiling again with the same settings keeps the compiled function."""
        if getattr(self.compiled_inference, "od2_settings", None) != (mode, canvas):
            compiled = torch.compile(self.inference_padded, mode=mode, fullgraph=True, dynamic=False)
            compiled.od2_settings = (mode, canvas)
            self.compiled_inference = compiled

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float [B, 3, H, W] in 0-255 -> normalised float [B, 3, H, W]."""
        return ((images.float() - self.pixel_mean) / self.pixel_std).contiguous(memory_format=self.memory_format)

    def raw_outputs(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per-level logits [B, N_l, K], deltas [B, N_l, 4] and anchors [N_l, 4] for normalised images."""
        pyramid = self.neck(self.backbone(images))
        features = [pyramid[name] for name in self.in_features]
        logits, deltas = self.head(features)
        anchors = self.anchor_generator([tuple(f.shape[-2:]) for f in features], images.device)
        return logits, deltas, anchors

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor,
                targets: dict[str, list[torch.Tensor]] | None = None):
        """Training (``targets`` given): dict of named scalar losses. Inference: list of detections.

        Args:
            images: uint8 [B, 3, H, W], padded batch.
            image_sizes: int [B, 2] content (h, w) per image.
            targets: ``{"boxes": [float [N_i, 4] XYXY], "labels": [int64 [N_i]]}``.
        """
        if targets is None:
            return self.inference(images, image_sizes)
        logits, deltas, anchors = self.raw_outputs(self.normalize(images))
        return self.losses(logits, deltas, anchors, targets["boxes"], targets["labels"], image_sizes)

    def inference(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections for uint8 ``images`` [B, 3, H, W] whose content is ``image_sizes`` int [B, 2] (h, w): per
        image ``dict(boxes float [M, 4] XYXY in the pixels of images, scores [M], labels int64 [M])``, sorted by
        decreasing score, M <= ``max_detections``.

        After :meth:`compile_inference`, the compiled :meth:`inference_padded`; otherwise :meth:`postprocess`."""
        if self.compiled_inference is not None and not torch.jit.is_tracing():
            canvas = self.compiled_inference.od2_settings[1]
            if canvas is not None:
                images = nn.functional.pad(images, (0, max(canvas[1] - images.shape[-1], 0),
                                                    0, max(canvas[0] - images.shape[-2], 0)))
            detections = unpad(self.compiled_inference(images, image_sizes))
            if detections is not None:
                return detections
        return self.postprocess(*self.raw_outputs(self.normalize(images)), image_sizes)

    def postprocess(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                    image_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """:meth:`inference`'s detections from :meth:`raw_outputs` (which :meth:`losses` also takes, so that an
        evaluation can compute both from one forward). On the CPU (and while tracing for export), through
        :func:`~od2.modeling.postprocess.detect_flat`, which drops low scores early; on other devices through
        :func:`~od2.modeling.postprocess.detect_padded`, whose only host sync is the final split into images.
        Both give the same detections."""
        settings = {"score_thresh": self.score_thresh, "topk": self.topk_candidates, "nms_thresh": self.nms_thresh,
                    "max_detections": self.max_detections}
        if logits[0].device.type != "cpu" and not torch.jit.is_tracing():
            detections = unpad(detect_padded(logits, deltas, anchors, image_sizes, self.box_coder, **settings))
            if detections is not None:
                return detections
        return detect(logits, deltas, anchors, image_sizes, self.box_coder, **settings)

    def inference_padded(self, images: torch.Tensor, image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`inference`'s detections in the padded form of
        :func:`~od2.modeling.postprocess.detect_padded` (boxes [B, D, 4], scores [B, D], labels [B, D], count [B],
        converged []), computed without a host sync: what ``torch.compile`` and CUDA graphs capture."""
        logits, deltas, anchors = self.raw_outputs(self.normalize(images))
        return detect_padded(logits, deltas, anchors, image_sizes, self.box_coder, score_thresh=self.score_thresh,
                             topk=self.topk_candidates, nms_thresh=self.nms_thresh,
                             max_detections=self.max_detections)

    def inference_flat(self, images: torch.Tensor, image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`inference`'s detections as flat tensors with ``image_index`` int64 [N] (see
        :func:`od2.modeling.postprocess.detect_flat`): the form a dynamic-batch ONNX graph returns."""
        return self.postprocess_flat(*self.raw_outputs(self.normalize(images)), image_sizes)

    def postprocess_flat(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                         image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`inference_flat`'s detections from :meth:`raw_outputs`."""
        return detect_flat(logits, deltas, anchors, image_sizes, self.box_coder, score_thresh=self.score_thresh,
                           topk=self.topk_candidates, nms_thresh=self.nms_thresh, max_detections=self.max_detections)

    def losses(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
               gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor],
               image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Focal loss and box loss, each summed and divided by the batch's number of positive anchors.

        For the IoU losses the decoded boxes are clipped to their image (``image_sizes`` [B, 2] as (h, w)) with
        no gradient through the clipped coordinates, as the original's RetinaNetGIOUOutputs (original-spec §5).
        """
        all_anchors = torch.cat(anchors)  # [A, 4]
        logits = torch.cat(logits, dim=1)  # [B, A, K]
        deltas = torch.cat(deltas, dim=1)  # [B, A, 4]
        boxes, labels, valid = pad_boxes(gt_boxes, gt_labels)  # [B, G, 4], [B, G], [B, G]
        with torch.no_grad():
            matched_idx, state = self.matcher(batched_box_iou(boxes, all_anchors), valid)
            matched_boxes = torch.gather(boxes, 1, matched_idx[..., None].expand(-1, -1, 4))  # [B, A, 4]
            matched_labels = torch.gather(labels, 1, matched_idx)  # [B, A]
        positive = state == POSITIVE
        num_pos = positive.sum().clamp(min=1)

        loss_cls = dense_focal_loss_sum(logits, positive | (state == NEGATIVE), positive, matched_labels,
                                        self.focal_alpha, self.focal_gamma)

        pos_anchors = all_anchors[None].expand_as(matched_boxes)[positive]
        pos_deltas, pos_gt = deltas[positive], matched_boxes[positive]
        iou_loss = self.box_loss_type not in ("smooth_l1", "l1")
        per_box = box_losses(
            self.box_loss_type,
            pred_deltas=pos_deltas,
            target_deltas=None if iou_loss else self.box_coder.encode(pos_anchors, pos_gt),
            pred_boxes=self.clip_to_images(self.box_coder.decode(pos_anchors, pos_deltas), image_sizes,
                                           positive) if iou_loss else None,
            target_boxes=pos_gt if iou_loss else None,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        losses = {"loss_cls": loss_cls / num_pos, "loss_box_reg": self.box_loss_scale * per_box.sum() / num_pos}
        if self.small_box_area > 0:
            losses["small_box_loss_share"] = self.small_box_loss_share(per_box.detach(), pos_gt)
        return losses

    def small_box_loss_share(self, per_box: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """Share of the box loss ``per_box`` [P] whose matched ground truth ``gt_boxes`` [P, 4] is smaller than
        ``small_box_area``; 0 when there is no box loss."""
        areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        small = (per_box * (areas < self.small_box_area)).sum()
        return small / per_box.sum().clamp(min=torch.finfo(per_box.dtype).tiny)

    @staticmethod
    def clip_to_images(boxes: torch.Tensor, image_sizes: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """Clip XYXY ``boxes`` [P, 4] of the anchors ``positive`` [B, A] marks to their image's (w, h)."""
        limits = image_sizes.to(boxes.device).flip(-1).repeat(1, 2).to(boxes.dtype)  # [B, 4] as (w, h, w, h)
        per_box = limits[:, None].expand(-1, positive.shape[1], -1)[positive]  # [P, 4]
        return torch.minimum(boxes.clamp(min=0), per_box)

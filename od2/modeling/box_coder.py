"""Box coder: anchors + (dx, dy, dw, dh) deltas <-> boxes (R-CNN parameterisation).

``dx = wx * (gx - ax) / aw``, ``dy = wy * (gy - ay) / ah``, ``dw = ww * log(gw / aw)``,
``dh = wh * log(gh / ah)`` on centres and sizes. Weights default to (1, 1, 1, 1) as the original.
Decoding clamps dw/dh at log(1000/16) (detectron2, torchvision) so a wild prediction cannot overflow exp.
"""

from __future__ import annotations

import math

import torch

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode/decode boxes relative to anchors. All boxes XYXY, shapes broadcast over leading dims [..., 4]."""

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    @staticmethod
    def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Deltas [..., 4] that turn ``anchors`` [..., 4] into ``boxes`` [..., 4]."""
        ax, ay, aw, ah = self._centre_size(anchors)
        gx, gy, gw, gh = self._centre_size(boxes)
        wx, wy, ww, wh = self.weights
        return torch.stack([
            wx * (gx - ax) / aw,
            wy * (gy - ay) / ah,
            ww * torch.log(gw / aw),
            wh * torch.log(gh / ah),
        ], dim=-1)

    def decode(self, anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Boxes [..., 4] XYXY from ``deltas`` [..., 4] applied to ``anchors`` [..., 4]."""
        deltas = deltas.float()
        ax, ay, aw, ah = self._centre_size(anchors)
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        cx, cy = ax + dx * aw, ay + dy * ah
        half_w, half_h = 0.5 * aw * torch.exp(dw), 0.5 * ah * torch.exp(dh)
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)

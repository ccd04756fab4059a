"""A stand-in detector that finds bright rectangles exactly, and images that hold them: the ground truth of a test
of inference wrappers is then the drawn rectangles themselves."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


class RectangleDetector(torch.nn.Module):
    """Per image one detection per connected region of channel 0 above 127 (inside the content): its bounding box
    in pixel-edge XYXY, label = channel 1's value // 50 there, score 0.9 - area / 1e6 (a piece of a rectangle cut by
    a tile's edge scores higher than the whole rectangle, the hard case for a merge)."""

    num_classes = 5

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        results = []
        for image, (h, w) in zip(images, image_sizes.tolist()):
            regions, _ = ndimage.label(image[0, :h, :w].numpy() > 127)
            boxes, scores, labels = [], [], []
            for region, found in enumerate(ndimage.find_objects(regions), start=1):
                ys, xs = found
                boxes.append([xs.start, ys.start, xs.stop, ys.stop])
                scores.append(0.9 - (xs.stop - xs.start) * (ys.stop - ys.start) / 1e6)
                labels.append(int(image[1, :h, :w].numpy()[regions == region].max()) // 50)
            results.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            "scores": torch.tensor(scores, dtype=torch.float32),
                            "labels": torch.tensor(labels, dtype=torch.int64)})
        return results


def draw_rectangles(height: int, width: int, boxes: list[tuple[int, int, int, int]], labels: list[int],
                    ) -> np.ndarray:
    """uint8 [height, width, 3] black image with filled XYXY ``boxes``: channel 0 at 255, channel 1 at 50 * label."""
    image = np.zeros((height, width, 3), np.uint8)
    for (x0, y0, x1, y1), label in zip(boxes, labels):
        image[y0:y1, x0:x1, 0] = 255
        image[y0:y1, x0:x1, 1] = 50 * label
    return image


def as_batch(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [H, W, 3] -> (uint8 [1, 3, H, W], int64 [[H, W]])."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), torch.tensor([image.shape[:2]])

"""od2: config-driven RetinaNet/EfficientDet object detection on modern PyTorch.

``from od2 import Detector`` gives the trained-model object (:mod:`od2.detector`); it is imported on first use, so
that ``import od2`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Detector", "Detections", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from od2.detector import Detector
        return Detector
    if name == "Detections":
        from od2.evaluation.detections import Detections
        return Detections
    raise AttributeError(f"module 'od2' has no attribute {name!r}")

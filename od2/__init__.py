"""od2: config-driven RetinaNet/EfficientDet object detection on modern PyTorch."""

__version__ = "0.1.0"

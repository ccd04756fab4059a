"""Reading images from disk into uint8 RGB arrays.

JPEG, PNG, WebP and GIF are decoded by ``torchvision.io.decode_image`` (libjpeg-turbo/libpng, about twice as fast as
PIL on JPEG); any other format (BMP, TIFF, ...) falls back to PIL. torchvision 0.29 deprecates its decoders in favour
of TorchCodec, which od2 does not depend on; the deprecation warning is silenced here until a migration.
EXIF orientation is ignored: pixels are returned in stored order, which is the order COCO-style annotations refer to.
"""

from __future__ import annotations

import errno
import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

__all__ = ["ImageReadError", "ImageSizeError", "read_image"]

# Leading bytes of the formats torchvision decodes natively (WebP is checked separately: RIFF....WEBP).
_TORCHVISION_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")

_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or unknown format)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path!r}: {reason}")


class ImageSizeError(ValueError):
    """A decoded image's size differs from the size its annotations were made for."""

    def __init__(self, path: str | os.PathLike, expected: tuple[int, int], actual: tuple[int, int]) -> None:
        self.path = os.fspath(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"image {self.path!r} decodes to (H, W) = {actual} but its record says {expected}; "
            "its boxes would be wrong (was the file replaced, or rotated by an EXIF-aware tool?)"
        )


def _uses_torchvision(data: bytes) -> bool:
    return data.startswith(_TORCHVISION_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _decode_torchvision(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/WebP/GIF bytes to uint8 [H, W, 3] RGB (first frame of an animation)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION, category=DeprecationWarning)
        chw = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    if chw.ndim == 4:
        chw = chw[0]
    if chw.dtype != torch.uint8:  # 16-bit PNG
        chw = to_dtype(chw, torch.uint8, scale=True)
    return chw.permute(1, 2, 0).numpy()


def _decode_pil(data: bytes) -> np.ndarray:
    """Decode any PIL-readable bytes to uint8 [H, W, 3] RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


def read_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file.
        expected_size: (H, W) the annotations refer to (an ImageRecord's height/width); checked if given.

    Returns:
        uint8 array [H, W, 3], RGB (grayscale, palette and alpha images converted; alpha dropped). It may be a
        non-contiguous view (channels-last strides of a CHW buffer).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file cannot be decoded; the message names the file and the decoder's reason.
        ImageSizeError: the decoded (H, W) differs from ``expected_size``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "image file not found", path)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ImageReadError(path, "file is empty")
    try:
        image = _decode_torchvision(data) if _uses_torchvision(data) else _decode_pil(data)
    except UnidentifiedImageError as exc:  # PIL's message names its in-memory buffer, not the file
        raise ImageReadError(path, "not an image format PIL or torchvision can read") from exc
    except (RuntimeError, OSError, ValueError) as exc:
        # torchvision's messages start with "decode_jpeg, <source file>:<line>, "; keep only the reason.
        reason = str(exc).splitlines()[0].rsplit(", ", 1)[-1] if str(exc) else type(exc).__name__
        raise ImageReadError(path, reason) from exc
    if expected_size is not None and tuple(image.shape[:2]) != tuple(expected_size):
        raise ImageSizeError(path, tuple(expected_size), tuple(image.shape[:2]))
    return image

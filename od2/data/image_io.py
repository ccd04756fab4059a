"""Reading images from disk into uint8 RGB arrays.

JPEG, PNG, WebP and GIF are decoded by ``torchvision.io.decode_image`` (libjpeg-turbo/libpng, about twice as fast as
PIL on JPEG); any other format (BMP, TIFF, ...) falls back to PIL. torchvision 0.29 deprecates its decoders in favour
of TorchCodec, which od2 does not depend on; the deprecation warning is silenced here until a migration.
EXIF orientation is ignored: pixels are returned in stored order, which is the order COCO-style annotations refer to.

Decompression bombs: the pixel count is read from the file's header (PIL opens lazily) and checked against a limit
before anything is decoded, so a 2 KB PNG claiming 50000x50000 pixels costs nothing. The default limit is PIL's own
``MAX_IMAGE_PIXELS`` (about 89M pixels, a 9450x9450 image); INPUT.MAX_IMAGE_PIXELS changes it.
"""

from __future__ import annotations

import errno
import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImagePixelLimitError",
    "ImageReadError",
    "ImageSizeError",
    "check_pixel_limit",
    "header_size",
    "pil_pixel_limit_off",
    "read_image",
]

# PIL's default Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3), kept as a number so that code changing PIL's
# global cannot change od2's limit.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

# Leading bytes of the formats torchvision decodes natively (WebP is checked separately: RIFF....WEBP).
_TORCHVISION_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")

_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
# torchvision prefixes its errors with the C++ function and source location: "decode_jpeg, /path/x.cpp:171, ".
_TORCHVISION_LOCATION = re.compile(r"^[\w()]+, \S+:\d+, ")


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or unknown format)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path!r}: {reason}")


class ImagePixelLimitError(ImageReadError):
    """An image's header claims more pixels than the limit (a decompression bomb, or a limit set too low)."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], max_pixels: int) -> None:
        self.size = size
        width, height = size
        super().__init__(path, f"its header says {width}x{height} = {width * height} pixels, more than the limit of "
                               f"{max_pixels} (INPUT.MAX_IMAGE_PIXELS; a decompression bomb, or raise the limit)")


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
    """Decode any PIL-readable bytes to uint8 [H, W, 3] RGB (the pixel limit was checked before)."""
    with pil_pixel_limit_off(), Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


@contextmanager
def pil_pixel_limit_off() -> Iterator[None]:
    """Let PIL open any size: od2 applies its own limit, which may be above PIL's. PIL's limit is a module global,
    so this is not thread-safe; od2 decodes in the main thread or in loader processes, never in threads."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def header_size(path: str | os.PathLike, data: bytes | None = None) -> tuple[int, int]:
    """(W, H) from the image's header, without decoding pixels.

    Raises:
        UnidentifiedImageError: PIL does not recognise the format.
    """
    with pil_pixel_limit_off(), Image.open(io.BytesIO(data) if data is not None else path) as im:
        return im.size


def check_pixel_limit(path: str | os.PathLike, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise ImagePixelLimitError if ``size`` (W, H) has more than ``max_pixels`` pixels (None or <= 0: no limit)."""
    if max_pixels and max_pixels > 0 and size[0] * size[1] > max_pixels:
        raise ImagePixelLimitError(path, size, max_pixels)


def _torchvision_reason(exc: Exception) -> str:
    """The decoder's reason, whole, without torchvision's source-location prefix."""
    message = str(exc).strip()
    return _TORCHVISION_LOCATION.sub("", message) if message else type(exc).__name__


def read_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file.
        expected_size: (H, W) the annotations refer to (an ImageRecord's height/width); checked if given.
        max_pixels: largest W * H decoded, checked from the header first; None or <= 0: no limit.

    Returns:
        uint8 array [H, W, 3], RGB (grayscale, palette and alpha images converted; alpha dropped). It may be a
        non-contiguous view (channels-last strides of a CHW buffer).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file cannot be decoded; the message names the file and the decoder's reason.
        ImagePixelLimitError: (an ImageReadError) the header claims more than ``max_pixels`` pixels.
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
        if max_pixels and max_pixels > 0:
            check_pixel_limit(path, header_size(path, data), max_pixels)
        image = _decode_torchvision(data) if _uses_torchvision(data) else _decode_pil(data)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:  # PIL's message names its in-memory buffer, not the file
        raise ImageReadError(path, "not an image format PIL or torchvision can read") from exc
    except (RuntimeError, OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for some bad headers
        raise ImageReadError(path, _torchvision_reason(exc)) from exc
    if expected_size is not None and tuple(image.shape[:2]) != tuple(expected_size):
        raise ImageSizeError(path, tuple(expected_size), tuple(image.shape[:2]))
    return image

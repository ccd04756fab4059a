"""Bad image files made on the spot: a truncated JPEG, a file that is not an image, a PNG decompression bomb."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BOMB_SIZE = (50000, 50000)  # (W, H): 2.5e9 pixels, 7.5 GB as RGB; the file itself is a few hundred bytes


def write_truncated_jpeg(path: Path) -> Path:
    """A JPEG cut after half its bytes (no end marker; PIL's verify still passes it)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def write_not_an_image(path: Path) -> Path:
    path.write_bytes(b"this is a text file with an image's name\n" * 10)
    return path


def write_png_bomb(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """A tiny PNG whose IHDR claims ``size`` (W, H) pixels, with a valid header CRC; nothing of that size is ever
    allocated here."""
    Image.new("RGB", (8, 8)).save(path, "PNG")
    data = bytearray(path.read_bytes())
    # Bytes 8..: IHDR chunk = length (4) "IHDR" (4) width (4) height (4) ... CRC over type + data at 29..33.
    data[16:24] = struct.pack(">II", *size)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def bad_images(tmp_path: Path) -> dict[str, Path]:
    """{"truncated": JPEG, "not_image": .jpg holding text, "bomb": 50000x50000 PNG header} under tmp_path/bad."""
    folder = tmp_path / "bad"
    folder.mkdir()
    return {
        "truncated": write_truncated_jpeg(folder / "truncated.jpg"),
        "not_image": write_not_an_image(folder / "notes.jpg"),
        "bomb": write_png_bomb(folder / "bomb.png"),
    }

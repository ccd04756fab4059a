"""The integrity check of a dataset's images when it is first loaded, cached per file.

Every image gets the cheap checks ultralytics makes: PIL reads the header (format and size), ``Image.verify`` walks
the file's structure (PNG chunks and CRCs, ...), a JPEG must end with the end-of-image marker ``FF D9`` (a truncated
JPEG passes ``verify``), and the header's W * H must not exceed the pixel limit (decompression bombs). Nothing is
decoded, so the check costs a fraction of a training epoch's reads.

Results are cached per file, keyed on (size, mtime), in one JSON file per set of image folders under the od2 cache
folder (:func:`cache_dir`: ``$OD2_CACHE_DIR``, else ``$XDG_CACHE_HOME/od2``, else ``~/.cache/od2``). The cache lives
there rather than next to the dataset because dataset folders are often read-only or shared between users and
machines, and a user's data tree should not gain files they did not ask for. The pixel limit is applied to the
cached size, so changing INPUT.MAX_IMAGE_PIXELS needs no new check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from od2.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, ImagePixelLimitError, pil_pixel_limit_off
from od2.data.records import DatasetInfo
from od2.utils.atomic_write import atomic_write

__all__ = [
    "BAD_IMAGE_POLICIES",
    "CACHE_ENV",
    "BadImagesError",
    "cache_dir",
    "check_image",
    "check_images",
    "drop_bad_images",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "OD2_CACHE_DIR"
BAD_IMAGE_POLICIES = ("skip", "error")
UNREADABLE = "unreadable_image"  # the DatasetInfo.skipped key counting images left out
_CACHE_VERSION = 1
_JPEG_END = b"\xff\xd9"
# Below this many files to check, a process pool costs more to start than it saves.
_MIN_FILES_FOR_WORKERS = 256
_MAX_LISTED = 20  # bad files named one by one in a log message or an error


class BadImagesError(ValueError):
    """Bad images where DATALOADER.BAD_IMAGES=error, or more of them than DATALOADER.MAX_BAD_IMAGE_SHARE allows."""


def cache_dir() -> Path:
    """od2's cache folder: ``$OD2_CACHE_DIR``, else ``$XDG_CACHE_HOME/od2``, else ``~/.cache/od2``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "od2"


def check_image(path: str | os.PathLike) -> tuple[tuple[int, int] | None, str]:
    """Check one file without decoding its pixels.

    Returns:
        ((W, H) from the header, "") for a sound image, or (size or None, reason) for a bad one.
    """
    path = os.fspath(path)
    try:
        with pil_pixel_limit_off(), Image.open(path) as im:  # the limit is od2's, applied to the size later
            size, is_jpeg = im.size, im.format == "JPEG"
            im.verify()
        if is_jpeg:
            with open(path, "rb") as f:
                f.seek(-2, os.SEEK_END)
                if f.read() != _JPEG_END:
                    return size, "truncated JPEG: no end-of-image marker (FF D9) at the end of the file"
        return size, ""
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        return None, "not an image format PIL can read"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's verify raises any of these
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_entry(item: tuple[str, int, int]) -> tuple[str, list]:
    """(path, size, mtime_ns) -> (path, cache entry [size, mtime_ns, W, H, reason]); runs in pool workers."""
    path, size, mtime = item
    wh, reason = check_image(path)
    width, height = wh if wh is not None else (0, 0)
    return path, [size, mtime, width, height, reason]


def _cache_file(paths: Sequence[str]) -> Path:
    """One cache file per set of image folders (a dataset's, typically)."""
    folders = "\n".join(sorted({os.path.dirname(os.path.abspath(p)) for p in paths}))
    return cache_dir() / "image_checks" / f"{hashlib.sha1(folders.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: check again
    return data.get("files", {}) if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else {}


def _write_cache(path: Path, entries: dict[str, list]) -> None:
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "files": entries}))
    except OSError as exc:  # a read-only home costs a recheck next time, never the run
        logger.warning("could not write the image check cache %s (%s); the next run checks the images again",
                       path, exc)


def check_images(paths: Sequence[str], max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, num_workers: int = 0,
                 progress: bool = True) -> dict[str, str]:
    """Check image files, reusing cached results of files whose size and mtime have not changed.

    Args:
        paths: image files.
        max_pixels: largest W * H allowed (None or <= 0: no limit).
        num_workers: processes checking the files not in the cache (0: this process).
        progress: show a progress bar while files are checked.

    Returns:
        {path: reason} for every bad file, in the order of ``paths``; empty when all are sound.
    """
    paths = [os.fspath(p) for p in paths]
    cache_path = _cache_file(paths) if paths else None
    cache = _read_cache(cache_path) if cache_path else {}
    entries: dict[str, list] = {}
    todo: list[tuple[str, int, int]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            entries[path] = [-1, -1, 0, 0, exc.strerror or "cannot stat the file"]
            continue
        cached = cache.get(path)
        if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            entries[path] = cached
        else:
            todo.append((path, st.st_size, st.st_mtime_ns))
    if todo:
        bar = tqdm(total=len(todo), desc="checking images", unit="img", disable=not progress, dynamic_ncols=True)
        if num_workers > 0 and len(todo) >= _MIN_FILES_FOR_WORKERS:
            with multiprocessing.get_context().Pool(min(num_workers, os.cpu_count() or 1)) as pool:
                for path, entry in pool.imap_unordered(_check_entry, todo, chunksize=64):
                    entries[path] = entry
                    bar.update()
        else:
            for item in todo:
                path, entry = _check_entry(item)
                entries[path] = entry
                bar.update()
        bar.close()
        _write_cache(cache_path, {**cache, **{p: e for p, e in entries.items() if e[0] >= 0}})
    bad = {}
    for path in paths:
        _, _, width, height, reason = entries[path]
        if not reason and max_pixels and max_pixels > 0 and width * height > max_pixels:
            reason = ImagePixelLimitError(path, (width, height), max_pixels).reason
        if reason:
            bad[path] = reason
    return bad


def _listing(bad: dict[str, str]) -> str:
    """One line per bad file (the first _MAX_LISTED), each with its whole reason."""
    lines = [f"  {path}: {reason}" for path, reason in list(bad.items())[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    return "\n".join(lines)


def drop_bad_images(info: DatasetInfo, policy: str = "skip", max_share: float = 0.1,
                    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, num_workers: int = 0,
                    progress: bool = True) -> DatasetInfo:
    """``info`` without the images that fail :func:`check_images` (records and ``coco_gt`` alike).

    The bad files are logged (count and list) and kept in ``unreadable_images``; ``skipped`` counts them as
    ``unreadable_image``. Images the dataset's reader already left out (its ``unreadable_images``, e.g. a YOLO image
    whose size cannot be read) count as bad too. Returns ``info`` itself when every image is sound.

    Args:
        policy: ``skip`` (leave bad images out) or ``error`` (stop at the first check that finds any).
        max_share: stop when more than this share of the images is bad, whatever the policy.

    Raises:
        BadImagesError: bad images and ``policy="error"``, or more than ``max_share`` of them; the message lists them.
        ValueError: an unknown policy or a share outside [0, 1].
    """
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"DATALOADER.BAD_IMAGES must be one of {BAD_IMAGE_POLICIES}, got {policy!r}")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"DATALOADER.MAX_BAD_IMAGE_SHARE must be in [0, 1], got {max_share}")
    found = check_images([r["file_name"] for r in info.records], max_pixels, num_workers, progress)
    bad = {**info.unreadable_images, **found}
    if not bad:
        return info
    total = len(info.records) + len(info.unreadable_images)
    share = len(bad) / total
    report = f"dataset {info.name!r}: {len(bad)} of {total} images are unreadable:\n{_listing(bad)}"
    if policy == "error":
        raise BadImagesError(f"{report}\nDATALOADER.BAD_IMAGES=error; set it to skip to leave them out")
    if share > max_share:
        raise BadImagesError(f"{report}\nthat is {share:.1%} of the images, more than DATALOADER.MAX_BAD_IMAGE_SHARE="
                             f"{max_share}; repair the files or raise the share")
    logger.warning("%s\nthey are left out (DATALOADER.BAD_IMAGES=skip)", report)
    if not found:
        return info
    records = [r for r in info.records if r["file_name"] not in found]
    kept_ids = {r["image_id"] for r in records}
    coco_gt = {**info.coco_gt,
               "images": [im for im in info.coco_gt["images"] if im["id"] in kept_ids],
               "annotations": [a for a in info.coco_gt["annotations"] if a["image_id"] in kept_ids]}
    return dataclasses.replace(info, records=records, coco_gt=coco_gt,
                               skipped={**info.skipped, UNREADABLE: info.skipped.get(UNREADABLE, 0) + len(found)},
                               unreadable_images=bad)

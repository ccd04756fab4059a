"""Video frames in and out through PyAV (FFmpeg's libraries in its wheel): frame sources for video files,
``rtsp://`` / ``http(s)://`` streams and cameras, and an H.264 writer for annotated videos.

PyAV is the optional ``video`` extra (``pip install 'od2[video]'``); it is imported when a video is opened.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["STREAM_SCHEMES", "VIDEO_EXTENSIONS", "VideoError", "VideoInput", "VideoReader", "VideoWriter",
           "is_video_file", "is_stream_url"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
# seconds a stream may take to answer when opened and between packets before it counts as gone
STREAM_TIMEOUT_S = 10.0
# a container that states no frame rate (some live streams) is written at this rate
FALLBACK_FPS = Fraction(25)


class VideoError(Exception):
    """A video, stream or camera that cannot be opened or decoded; the message names it and FFmpeg's reason."""


def import_av() -> ModuleType:
    """The ``av`` module, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as exc:
        raise ImportError("video input needs PyAV: pip install 'od2[video]'") from exc
    return av


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` names a video file by its extension (:data:`VIDEO_EXTENSIONS`, case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_stream_url(text: str) -> bool:
    """Whether ``text`` is a stream URL (:data:`STREAM_SCHEMES`, case-insensitive)."""
    return text.lower().startswith(STREAM_SCHEMES)


@dataclass(frozen=True)
class VideoInput:
    """Where frames come from.

    Attributes:
        kind: ``file``, ``url`` or ``camera``.
        location: the file path, the URL, or the camera's index as text.
        name: the stem of the output files (the file's or URL's last path part; ``camera<N>``).
    """

    kind: str
    location: str
    name: str

    @classmethod
    def file(cls, path: str | Path) -> VideoInput:
        return cls("file", str(path), Path(path).stem)

    @classmethod
    def url(cls, url: str) -> VideoInput:
        path = url.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        stem = Path(path.split("/", 1)[1]).stem if "/" in path else ""
        return cls("url", url, stem or "stream")

    @classmethod
    def camera(cls, index: int) -> VideoInput:
        return cls("camera", str(index), f"camera{index}")

    def __str__(self) -> str:
        return f"camera {self.location}" if self.kind == "camera" else self.location


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's reason without PyAV's errno prefix, e.g. ``Invalid data found when processing input``."""
    return str(getattr(exc, "strerror", None) or exc)


class VideoReader:
    """An opened video input; iterate :meth:`frames`. A context manager that closes the container.

    Raises :class:`VideoError` (naming the input and FFmpeg's reason) when it cannot be opened, has no video
    stream, or is a camera index with no device.
    """

    def __init__(self, source: VideoInput) -> None:
        av = import_av()
        self.source = source
        location, options = source.location, {}
        open_kwargs: dict[str, Any] = {}
        if source.kind == "camera":
            location, open_kwargs["format"] = self._camera_device(int(source.location)), "v4l2"
        elif source.kind == "url":
            open_kwargs["timeout"] = STREAM_TIMEOUT_S
            if location.lower().startswith(("rtsp://", "rtsps://")):
                options["rtsp_transport"] = "tcp"  # UDP drops packets on busy networks: broken frames
        try:
            self.container = av.open(location, options=options, **open_kwargs)
        except av.FFmpegError as exc:
            raise VideoError(f"{source}: cannot open the video: {_ffmpeg_reason(exc)}") from exc
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{source}: holds no video stream")
        self.stream = self.container.streams.video[0]
        self.decode_error: str | None = None

    @staticmethod
    def _camera_device(index: int) -> str:
        if not sys.platform.startswith("linux"):
            raise VideoError(f"camera {index}: cameras are read through Video4Linux (Linux); on {sys.platform} "
                             "pass the camera's stream URL instead")
        device = Path(f"/dev/video{index}")
        if not device.exists():
            present = sorted(p.name for p in Path("/dev").glob("video*"))
            raise VideoError(f"camera {index}: no such camera ({device} does not exist; "
                             f"{'present: ' + ', '.join(present) if present else 'no /dev/video* devices'})")
        return str(device)

    @property
    def fps(self) -> Fraction:
        """The stream's frame rate (its average, else FFmpeg's guess, else :data:`FALLBACK_FPS`)."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return Fraction(rate) if rate else FALLBACK_FPS

    def num_frames(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """How many frames :meth:`frames` yields with this stride and limit, when the container knows its frame
        count (files mostly do, streams do not) or ``max_frames`` bounds it; else None."""
        total = math.ceil(self.stream.frames / stride) if self.stream.frames else None
        if max_frames is None:
            return total
        return max_frames if total is None else min(total, max_frames)

    def frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
        """``(frame index, time in seconds, image uint8 [H, W, 3] RGB)`` of every ``stride``-th frame (indices 0,
        stride, 2 * stride, ... in decoding order), at most ``max_frames`` of them.

        A decoding error before the first frame raises :class:`VideoError`; one after it ends the frames with a
        warning naming the frame, and :attr:`decode_error` holds the reason.
        """
        av = import_av()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        rate, index, yielded = self.fps, 0, 0
        decoded = self.container.decode(self.stream)
        while max_frames is None or yielded < max_frames:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                if index == 0:
                    raise VideoError(f"{self.source}: cannot decode the video: {_ffmpeg_reason(exc)}") from exc
                self.decode_error = f"frame {index}: {_ffmpeg_reason(exc)}"
                logger.warning("%s: decoding stopped at frame %d (%s); the frames before it are kept",
                               self.source, index, _ffmpeg_reason(exc))
                return
            if index % stride == 0:
                time = frame.time if frame.time is not None else float(index / rate)
                yield index, time, frame.to_ndarray(format="rgb24")
                yielded += 1
            index += 1

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encoder_name() -> str:
    """The H.264 encoder of PyAV's FFmpeg (libx264 in its wheels), else MPEG-4 part 2, which every FFmpeg has."""
    av = import_av()
    try:
        av.codec.Codec("libx264", "w")
    except av.FFmpegError:
        return "mpeg4"
    return "libx264"


class VideoWriter:
    """Writes uint8 [H, W, 3] RGB frames to an MP4 at a constant ``fps`` (H.264, yuv420p, as players expect).

    yuv420p needs even sides: a frame with an odd height or width gets one edge row or column repeated.
    """

    def __init__(self, path: str | Path, fps: Fraction) -> None:
        self.av = import_av()
        self.path = Path(path)
        self.fps = fps
        self.container: Any = None
        self.stream: Any = None

    def write(self, image: np.ndarray) -> None:
        """Append one frame; the first one opens the file and fixes the video's size."""
        height, width = image.shape[:2]
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self.container is None:
            self.container = self.av.open(str(self.path), "w")
            self.stream = self.container.add_stream(encoder_name(), rate=self.fps)
            self.stream.height, self.stream.width = image.shape[:2]
            self.stream.pix_fmt = "yuv420p"
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file (a writer that got no frame writes no file)."""
        if self.container is not None:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

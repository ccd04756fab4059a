"""``od2 predict`` on videos, streams and cameras: frames decoded by :mod:`od2.evaluation.video`, run in batches
through the same :class:`~od2.evaluation.pipeline.InferencePipeline` as images, written as JSON lines and an
annotated video.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from .detections import Detections
from .pipeline import InferencePipeline
from .video import VideoError, VideoInput, VideoReader, VideoWriter, is_stream_url, is_video_file

__all__ = ["VideoSummary", "frame_record", "predict_video", "split_inputs", "video_output_names"]

T = TypeVar("T")


def split_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[VideoInput]]:
    """``(image inputs, video inputs)``: stream URLs (:data:`~od2.evaluation.video.STREAM_SCHEMES`) and files
    with a video extension are videos; everything else (image files, folders, which are searched for images
    only) stays with the images. Raises ``FileNotFoundError`` for a video file that does not exist."""
    images, videos = [], []
    for raw in inputs:
        item = str(raw)
        if is_stream_url(item):
            videos.append(VideoInput.url(item))
        elif is_video_file(item) and not Path(item).is_dir():
            if not Path(item).is_file():
                raise FileNotFoundError(f"predict input not found: {item}")
            videos.append(VideoInput.file(item))
        else:
            images.append(item)
    return images, videos


def video_output_names(videos: Sequence[VideoInput]) -> list[str]:
    """A unique output stem per video input: its name, clashes get ``_1``, ``_2``, ..."""
    names: list[str] = []
    for video in videos:
        candidate, n = video.name, 0
        while candidate in names:
            n += 1
            candidate = f"{video.name}_{n}"
        names.append(candidate)
    return names


def frame_record(index: int, seconds: float, result: Detections) -> dict:
    """One JSON line: ``frame`` (index in the source), ``time`` (s), ``detections``: ``bbox`` XYWH in the
    frame's pixels (COCO's convention, as detections.json; 5 decimals), ``score`` (6 decimals), ``label``
    (0..K-1) and ``name``."""
    xywh = result.boxes_xywh.tolist()
    return {"frame": index, "time": round(seconds, 6), "detections": [
        {"bbox": [round(v, 5) for v in box], "score": round(score, 6), "label": label, "name": name}
        for box, score, label, name in zip(xywh, result.scores.tolist(), result.labels.tolist(), result.names)]}


@dataclass
class VideoSummary:
    """What :func:`predict_video` wrote for one input."""

    source: str
    frames: int
    detections: int
    seconds: float
    jsonl: Path
    video: Path | None
    decode_error: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        written = f"{self.jsonl}" + (f", {self.video}" if self.video else "")
        stopped = f" (decoding stopped at {self.decode_error})" if self.decode_error else ""
        return (f"{self.source}: {self.frames} frames, {self.detections} detections, "
                f"{self.frames_per_second:.1f} frames/s -> {written}{stopped}")


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def predict_video(
    pipeline: InferencePipeline,
    source: VideoInput,
    out_dir: str | os.PathLike,
    name: str | None = None,
    *,
    score_thresh: float = 0.3,
    batch_size: int = 1,
    stride: int = 1,
    max_frames: int | None = None,
    draw: bool = True,
    progress: bool = True,
) -> VideoSummary:
    """Detect objects in every ``stride``-th frame of ``source`` (at most ``max_frames``) through ``pipeline``.

    Writes ``OUT/<name>.jsonl`` (one :func:`frame_record` per processed frame, detections with score >=
    ``score_thresh``) and, with ``draw``, ``OUT/<name>.mp4``: the processed frames with their boxes drawn, at the
    source's frame rate / ``stride``. ``name`` defaults to the input's (:class:`VideoInput`).

    Raises :class:`~od2.evaluation.video.VideoError` when the input cannot be opened or its first frame not
    decoded; a decoding error later ends the video with a warning, and the outputs keep the frames before it.
    """
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = name or source.name
    out_dir = Path(out_dir)
    jsonl, video = out_dir / f"{name}.jsonl", out_dir / f"{name}.mp4" if draw else None
    if source.kind == "file" and video is not None and video.resolve() == Path(source.location).resolve():
        raise ValueError(f"the annotated video {video} would overwrite its input: choose another output folder")
    pipeline.model.eval()
    frames = detections = 0
    with VideoReader(source) as reader:
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = VideoWriter(video, reader.fps / stride) if video is not None else None
        bar = tqdm(total=reader.num_frames(stride, max_frames), desc=name, unit="frame", disable=not progress,
                   dynamic_ncols=True)
        start = time.perf_counter()
        try:
            with jsonl.open("w") as lines:
                for chunk in _batches(reader.frames(stride, max_frames), batch_size):
                    indices, times, images = zip(*chunk)
                    batch = pipeline.collate([pipeline.prepare(image) for image in images])
                    results, _ = pipeline.detect_batch(batch, images=images)
                    for index, seconds, result in zip(indices, times, results):
                        result = result.above(score_thresh)
                        lines.write(json.dumps(frame_record(index, seconds, result)) + "\n")
                        if writer is not None:
                            writer.write(result.draw(score_thresh=score_thresh))
                        detections += len(result)
                    frames += len(chunk)
                    bar.update(len(chunk))
        except VideoError:
            jsonl.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - start
    return VideoSummary(str(source), frames, detections, seconds, jsonl, video if frames else None,
                        reader.decode_error)

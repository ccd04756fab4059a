"""``od2 serve``: a web page to try a trained detector (Gradio).

Upload an image, several images or a folder's files; the page shows each image with its detections drawn, a table of
the boxes and the run's facts. The score slider redraws the last detections (kept per browser session in a
``gr.State``) without running the model again. Every event is also a named HTTP endpoint (``/detect``,
``/detect_files``, ``/detect_folder``, ``/redraw``) that ``gradio_client`` or plain HTTP can call.

The page calls the detector it is given (``od2.Detector``: the one inference path of eval and predict); ``od2 serve``
builds it, since tools and ``od2.detector`` share a layer and do not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from od2.data.image_io import ImageReadError
from od2.evaluation.detections import Detections

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["TABLE_HEADERS", "ImageDetector", "build_app", "detection_rows", "drawn_images", "facts_markdown"]

TABLE_HEADERS = ["image", "class", "score", "x0", "y0", "x1", "y1"]
DEFAULT_SCORE_THRESH = 0.3

# (image name, its detections): what the page keeps per session between the model's run and the slider's redraws
NamedDetections = tuple[str, Detections]


class ImageDetector(Protocol):
    """What the page needs of a detector: ``od2.Detector`` has both."""

    def __call__(self, images: Any) -> Detections | list[Detections]: ...

    def info(self) -> dict[str, Any]: ...


def detection_rows(results: Sequence[NamedDetections], score_thresh: float) -> list[list[Any]]:
    """The table: one row ``[image, class, score, x0, y0, x1, y1]`` per detection with score >= ``score_thresh``,
    boxes XYXY in the image's own pixels (2 decimals), scores to 4 decimals, images in upload order."""
    rows = []
    for name, detections in results:
        kept = detections.above(score_thresh)
        for class_name, score, box in zip(kept.names, kept.scores.tolist(), kept.boxes.tolist()):
            rows.append([name, class_name, round(score, 4), *(round(v, 2) for v in box)])
    return rows


def drawn_images(results: Sequence[NamedDetections], score_thresh: float) -> list[tuple[np.ndarray, str]]:
    """The gallery: each image (uint8 [H, W, 3] RGB, its own size) with its detections of score >= ``score_thresh``
    drawn, captioned ``"name: N detections"``."""
    gallery = []
    for name, detections in results:
        kept = detections.above(score_thresh)
        gallery.append((kept.draw(), f"{name}: {len(kept)} detection{'s' * (len(kept) != 1)}"))
    return gallery


def facts_markdown(info: dict[str, Any]) -> str:
    """The run's facts (``Detector.info()``) as a Markdown line: classes, test size, test-time mode, device."""
    min_size = info["min_size_test"] or "original"
    classes = info["classes"]
    return (f"**{len(classes)} classes**: {', '.join(classes)}  \n**test size** {min_size} (longest side at most "
            f"{info['max_size_test']}) · **mode** {info['mode']} · **device** {info['device']}")


def _detect_paths(detector: ImageDetector, paths: Sequence[str], progress: Any) -> list[NamedDetections]:
    """Detections of image files one by one (so that the page's progress bar moves per image); files that are not
    images are skipped with one warning naming them."""
    import gradio as gr

    results, skipped = [], []
    for path in progress.tqdm(list(paths), desc="detecting", unit="image"):
        try:
            results.append((Path(path).name, detector(path)))
        except (ImageReadError, FileNotFoundError) as exc:
            skipped.append(f"{Path(path).name} ({exc})")
    if skipped:
        gr.Warning(f"skipped {len(skipped)} file(s) that are not readable images: {'; '.join(skipped)}")
    if not results:
        raise gr.Error("none of the uploaded files is a readable image")
    return results


def build_app(detector: ImageDetector, title: str = "od2 detector") -> gr.Blocks:
    """The demo page of ``detector`` (call ``.launch()`` on it).

    Endpoints (``api_name``), each returning ``(gallery of drawn images, table rows)`` with the rows' columns
    :data:`TABLE_HEADERS`:
      - ``/detect(image, score_thresh)``: one image (uint8 RGB; none: empty results);
      - ``/detect_files(files, score_thresh)`` and ``/detect_folder(files, score_thresh)``: image files;
      - ``/redraw(score_thresh)``: the session's last detections at another threshold, without the model.
    """
    import gradio as gr

    def show(results: list[NamedDetections], score_thresh: float) -> tuple[list, list[list[Any]]]:
        return drawn_images(results, score_thresh), detection_rows(results, score_thresh)

    def detect_image(image: np.ndarray | None, score_thresh: float) -> tuple[list, list[list[Any]], list]:
        results = [] if image is None else [("image", detector(image))]  # None: the image was cleared
        return *show(results, score_thresh), results

    def detect_files(paths: list[str] | None, score_thresh: float,
                     progress: gr.Progress = gr.Progress()) -> tuple[list, list[list[Any]], list]:
        if not paths:
            raise gr.Error("upload one or more image files first")
        results = _detect_paths(detector, paths, progress)
        return *show(results, score_thresh), results

    def redraw(results: list[NamedDetections] | None, score_thresh: float) -> tuple[list, list[list[Any]]]:
        return show(results or [], score_thresh)

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\n{facts_markdown(detector.info())}")
        last = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Image"):
                    image = gr.Image(type="numpy", image_mode="RGB", sources=["upload", "clipboard"], label="image")
                with gr.Tab("Files"):
                    files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                    label="image files")
                with gr.Tab("Folder"):
                    folder = gr.File(file_count="directory", type="filepath", label="a folder of images")
                score = gr.Slider(0.0, 1.0, value=DEFAULT_SCORE_THRESH, step=0.01, label="score threshold",
                                  info="redraws the last detections; the model does not run again")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="detections", format="png", columns=2, height="auto")
        table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "str", "number", "number", "number", "number",
                                                              "number"], label="boxes (XYXY, image pixels)",
                             interactive=False)
        outputs = [gallery, table, last]
        # change, not upload: a pasted image counts too, and clearing the image clears the results
        image.change(detect_image, [image, score], outputs, api_name="detect")
        files.upload(detect_files, [files, score], outputs, api_name="detect_files")
        folder.upload(detect_files, [folder, score], outputs, api_name="detect_folder")
        score.release(redraw, [last, score], [gallery, table], api_name="redraw")
    return app

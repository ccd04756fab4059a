"""``od2 predict`` on videos, streams and cameras: a short clip of digits scenes written by the test with PyAV,
checked against ``od2.Detector`` on the same frames decoded independently (PyAV in the test)."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from od2 import Detector
from od2.cli import main
from od2.config import load_config
from od2.data.datasets.digits import ensure_digits
from od2.evaluation.predict import collect_images
from od2.evaluation.predict_video import split_inputs, video_output_names
from od2.evaluation.video import VideoError, VideoInput, VideoReader, VideoWriter

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"
NUM_FRAMES, FPS, SIZE = 12, 6, 96  # 2 seconds of 96 x 96 frames
SCORE = 0.3


def write_clip(path: Path, frames: list[np.ndarray], fps: int = FPS, faststart: bool = False) -> Path:
    """An H.264 MP4 of ``frames`` (uint8 [H, W, 3] RGB), written with PyAV directly (not od2's writer)."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[np.ndarray]:
    """Twelve digits validation scenes cut to SIZE x SIZE."""
    paths = ensure_digits(tmp_path_factory.mktemp("video_digits"), num_train=1, num_val=NUM_FRAMES, seed=7)
    files = sorted(Path(paths["val"].image_root).glob("*.png"))
    return [np.asarray(Image.open(f).convert("RGB"))[:SIZE, :SIZE].copy() for f in files[:NUM_FRAMES]]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, scenes) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", scenes)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, confident_model) -> Path:
    """A run folder (config.yaml and model_final.pth) of the tiny digits model, batches of 2 at test time."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(CONFIG, ["MODEL.DEVICE=cpu", "TEST.IMS_PER_BATCH=2", f"OUTPUT_DIR={run}", "MODEL.WEIGHTS=",
                               f"INPUT.MIN_SIZE_TEST={SIZE}", "INPUT.MAX_SIZE_TEST=160",
                               "DATALOADER.NUM_WORKERS=0"])
    (run / "config.yaml").write_text(cfg.dump())
    torch.save({"model": confident_model.state_dict(), "class_names": [str(d) for d in range(10)]},
               run / "model_final.pth")
    return run


def predict(run_dir: Path, *args: str) -> int:
    return main(["predict", "--config", str(run_dir / "config.yaml"), *args])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_on_a_video_equals_the_detector_on_its_frames(run_dir, clip, tmp_path):
    out = tmp_path / "out"
    assert predict(run_dir, str(clip), "--out", str(out), "--stride", "2", "--batch-size", "2",
                   "--score-thresh", str(SCORE)) == 0
    lines = read_lines(out / "clip.jsonl")
    assert [line["frame"] for line in lines] == [0, 2, 4, 6, 8, 10]
    np.testing.assert_allclose([line["time"] for line in lines], np.arange(0, NUM_FRAMES, 2) / FPS, atol=1e-6)

    frames = decode(clip)[::2]
    expected = Detector.from_run(run_dir, device="cpu")(frames, score_thresh=SCORE)
    for line, reference in zip(lines, expected):
        assert len(line["detections"]) == len(reference) > 10
        xyxy = np.array([d["bbox"] for d in line["detections"]], dtype=np.float64)
        xyxy[:, 2:] += xyxy[:, :2]  # XYWH -> XYXY
        np.testing.assert_allclose(xyxy, reference.boxes.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose([d["score"] for d in line["detections"]], reference.scores.numpy(), atol=1e-4)
        assert [d["label"] for d in line["detections"]] == reference.labels.tolist()
        assert [d["name"] for d in line["detections"]] == reference.names

    drawn = decode(out / "clip.mp4")
    assert len(drawn) == len(lines) and drawn[0].shape == (SIZE, SIZE, 3)
    with av.open(str(out / "clip.mp4")) as container:
        assert container.streams.video[0].average_rate == FPS / 2


def test_images_and_a_video_in_one_call_without_drawing(run_dir, clip, scenes, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(scenes[0]).save(image)
    loud = clip.with_name("CLIP.MP4")
    loud.write_bytes(clip.read_bytes())  # extensions are case-insensitive
    out = tmp_path / "out"
    assert predict(run_dir, str(image), str(loud), "--out", str(out), "--no-draw", "--stride", "5") == 0
    assert [line["frame"] for line in read_lines(out / "CLIP.jsonl")] == [0, 5, 10]
    assert not (out / "CLIP.mp4").exists()
    assert json.loads((out / "images.json").read_text())["images"][0]["file_name"] == str(image)


def test_a_corrupt_video_is_a_clear_error(run_dir, clip, tmp_path, capsys):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"  # moov atom at the end (no faststart): cut off, nothing is readable
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    for bad in (noise, truncated):
        assert predict(run_dir, str(bad), "--out", str(tmp_path / "out")) == 2
        err = capsys.readouterr().err
        assert f"{bad}: cannot open the video: " in err and ("Invalid data" in err or "moov" in err), err
    assert not (tmp_path / "out").exists()


def test_a_decode_error_mid_stream_keeps_the_frames_before_it(run_dir, scenes, tmp_path, caplog):
    whole = write_clip(tmp_path / "whole.mp4", scenes, faststart=True)
    cut = tmp_path / "cut.mp4"  # the index first: the container opens and the frames run out part way
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with VideoReader(VideoInput.file(cut)) as reader:
        kept = len(list(reader.frames()))
        assert 0 < kept < NUM_FRAMES and reader.decode_error.startswith(f"frame {kept}: ")
    out = tmp_path / "out"
    assert predict(run_dir, str(cut), "--out", str(out)) == 0
    assert len(read_lines(out / "cut.jsonl")) == kept == len(decode(out / "cut.mp4"))
    assert f"decoding stopped at frame {kept}" in caplog.text


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_stream_url_with_max_frames(run_dir, scenes, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_clip(served / "clip.mp4", scenes, faststart=True)  # a stream is read front to back
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        out = tmp_path / "out"
        assert predict(run_dir, url, "--out", str(out), "--max-frames", "4", "--stride", "3") == 0
    finally:
        server.shutdown()
        thread.join()
    assert [line["frame"] for line in read_lines(out / "clip.jsonl")] == [0, 3, 6, 9]
    assert len(decode(out / "clip.mp4")) == 4


def test_a_missing_camera_is_a_clear_error(run_dir, tmp_path, capsys):
    assert predict(run_dir, "--camera", "63", "--out", str(tmp_path / "out")) == 2
    assert "camera 63: " in capsys.readouterr().err
    with pytest.raises(VideoError, match="camera 63: "):
        VideoReader(VideoInput.camera(63))


def test_video_input_without_pyav_names_the_extra(monkeypatch, clip):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install 'od2\[video\]'"):
        VideoReader(VideoInput.file(clip))


def test_inputs_are_split_into_images_and_videos(tmp_path, clip):
    folder = tmp_path / "photos"
    folder.mkdir()
    images, videos = split_inputs([str(folder), "a.png", str(clip), "rtsp://cam.local:554/live/front?x=1",
                                   "HTTPS://example.org/"])
    assert images == [str(folder), "a.png"]
    assert [(v.kind, v.name) for v in videos] == [("file", "clip"), ("url", "front"), ("url", "stream")]
    with pytest.raises(FileNotFoundError, match="missing.mkv"):
        split_inputs([str(tmp_path / "missing.mkv")])
    folder_of_videos = tmp_path / "videos"
    folder_of_videos.mkdir()
    (folder_of_videos / "clip.mp4").write_bytes(clip.read_bytes())
    assert split_inputs([str(folder_of_videos)]) == ([str(folder_of_videos)], [])
    with pytest.raises(ValueError, match="folders are searched for images only: name video files one by one"):
        collect_images([folder_of_videos])
    assert video_output_names([VideoInput.file("a/clip.mp4"), VideoInput.file("b/clip.avi"),
                               VideoInput.camera(0)]) == ["clip", "clip_1", "camera0"]


def test_the_writer_pads_odd_sizes_to_even(tmp_path):
    frames = [np.full((15, 21, 3), value, dtype=np.uint8) for value in (0, 128, 255)]
    with VideoWriter(tmp_path / "odd.mp4", fps=FPS) as writer:
        for frame in frames:
            writer.write(frame)
    decoded = decode(tmp_path / "odd.mp4")
    assert len(decoded) == 3 and decoded[0].shape == (16, 22, 3)
    assert [int(np.median(frame)) for frame in decoded] == pytest.approx([0, 128, 255], abs=3)

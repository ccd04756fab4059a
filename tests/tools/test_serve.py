"""``od2 serve``: the page's pure parts (table rows, drawn images, the run's facts) against hand-made detections, the
command's lazy Gradio import, and the running app driven through its real HTTP API with ``gradio_client``: upload an
image, receive the boxes (those ``od2.Detector`` gives) and the drawn image, redraw at a higher threshold."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from od2 import Detector
from od2.cli import main
from od2.config import load_config
from od2.evaluation.detections import Detections
from od2.tools.serve import TABLE_HEADERS, build_app, detection_rows, drawn_images, facts_markdown

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"
CLASSES = [str(d) for d in range(10)]


def hand_made_detections() -> Detections:
    """Two boxes on a black 96x128 image: a "dog" at 0.9 and a "cat" at 0.4."""
    return Detections(boxes=torch.tensor([[2.0, 3.0, 20.0, 30.0], [80.0, 50.0, 120.0, 90.0]]),
                      scores=torch.tensor([0.9, 0.4]), labels=torch.tensor([1, 0]), class_names=("cat", "dog"),
                      category_ids=(1, 2), image_size=(96, 128), image=np.zeros((96, 128, 3), np.uint8))


def test_table_rows_keep_the_detections_above_the_threshold():
    results = [("a.png", hand_made_detections()), ("b.png", hand_made_detections())]
    assert detection_rows(results, 0.5) == [["a.png", "dog", 0.9, 2.0, 3.0, 20.0, 30.0],
                                            ["b.png", "dog", 0.9, 2.0, 3.0, 20.0, 30.0]]
    rows = detection_rows(results[:1], 0.0)
    assert rows[1] == ["a.png", "cat", 0.4, 80.0, 50.0, 120.0, 90.0] and len(rows[0]) == len(TABLE_HEADERS)
    assert detection_rows(results, 0.95) == []


def test_drawn_images_show_only_the_boxes_above_the_threshold():
    [(drawn, caption)] = drawn_images([("a.png", hand_made_detections())], 0.5)
    assert drawn.shape == (96, 128, 3) and drawn.dtype == np.uint8
    assert caption == "a.png: 1 detection"
    assert drawn[15, 2].any() and drawn[15, 20].any()  # the dog's left and right edges
    assert not drawn[40:96, 70:128].any()  # the cat (0.4) is not drawn at 0.5
    [(all_drawn, caption)] = drawn_images([("a.png", hand_made_detections())], 0.0)
    assert all_drawn[70, 80].any() and all_drawn[70, 119].any() and caption == "a.png: 2 detections"


def test_facts_name_the_classes_test_size_and_mode():
    facts = facts_markdown({"classes": ["cat", "dog"], "min_size_test": 512, "max_size_test": 683, "mode": "tta",
                            "device": "cpu"})
    assert "2 classes" in facts and "cat, dog" in facts and "512" in facts and "683" in facts and "tta" in facts


def test_od2_without_gradio_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert main(["serve", "--run", str(tmp_path)]) == 2
    assert "pip install 'od2[serve]'" in capsys.readouterr().err


def test_the_command_line_does_not_import_gradio():
    code = "import sys, od2.cli; od2.cli.build_parser().format_help(); print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, confident_model):
    """A finished run folder: config.yaml and model_final.pth of the confident digits model."""
    run = tmp_path_factory.mktemp("serve_run")
    cfg = load_config(CONFIG, ["MODEL.DEVICE=cpu", f"OUTPUT_DIR={run}", "MODEL.WEIGHTS="])
    (run / "config.yaml").write_text(cfg.dump())
    torch.save({"model": confident_model.state_dict(), "class_names": CLASSES}, run / "model_final.pth")
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rows_of(table: dict) -> list[list]:
    assert table["headers"] == TABLE_HEADERS
    return table["data"]


@pytest.mark.slow
def test_the_running_app_over_http(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    image_file = tmp_path / "noise.png"
    Image.fromarray(original).save(image_file)
    other_file = tmp_path / "other.png"
    Image.fromarray(original[:64]).save(other_file)
    detector = Detector.from_run(run_dir, device="cpu")
    reference = detector(str(image_file))
    high = float(reference.scores.median())
    assert 0 < len(reference.above(high)) < len(reference)

    app = build_app(detector)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        gallery, table = client.predict(handle_file(str(image_file)), 0.0, api_name="/detect")
        rows = rows_of(table)
        assert [row[1] for row in rows] == reference.names
        np.testing.assert_allclose([row[2] for row in rows], reference.scores.numpy(), atol=1e-4)
        np.testing.assert_allclose([row[3:] for row in rows], reference.boxes.numpy(), atol=0.01)
        [item] = gallery
        drawn = np.asarray(Image.open(item["image"]).convert("RGB"))
        assert drawn.shape == original.shape
        x0, y0, x1, y1 = reference.boxes[0].round().int().tolist()
        assert (drawn[y0:y1, x0] != original[y0:y1, x0]).any()  # the top box's left edge is drawn

        gallery, table = client.predict(high, api_name="/redraw")  # the session's last detections
        strong = reference.above(high)
        assert [row[1:3] for row in rows_of(table)] == [[name, round(score, 4)] for name, score in
                                                        zip(strong.names, strong.scores.tolist())]
        assert len(gallery) == 1

        gallery, table = client.predict([handle_file(str(image_file)), handle_file(str(other_file))], high,
                                        api_name="/detect_files")
        assert [item["caption"].split(":")[0] for item in gallery] == ["noise.png", "other.png"]
        assert {row[0] for row in rows_of(table)} <= {"noise.png", "other.png"}
        assert sum(row[0] == "noise.png" for row in rows_of(table)) == len(strong)

        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        gallery, table = client.predict([handle_file(str(notes)), handle_file(str(other_file))], high,
                                        api_name="/detect_folder")
        assert [item["caption"].split(":")[0] for item in gallery] == ["other.png"]  # the text file is skipped
        with pytest.raises(AppError, match="none of the uploaded files is a readable image"):
            client.predict([handle_file(str(notes))], high, api_name="/detect_folder")

        gallery, table = client.predict(None, high, api_name="/detect")  # the image cleared: no results left
        assert gallery == [] and rows_of(table) == [] and rows_of(client.predict(0.0, api_name="/redraw")[1]) == []
    finally:
        app.close()

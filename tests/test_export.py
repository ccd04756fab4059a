"""ONNX export with postprocessing: onnxruntime's detections equal PyTorch's on real photographs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image

import od2.layers.winograd as winograd_module
from od2.cli import main
from od2.export import ExportableRetinaNet, export_onnx, max_detection_difference, prepare_image
from od2.layers.winograd import WinogradConv2d, convert_to_winograd

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"
CANVAS = (256, 352)


@pytest.fixture(scope="module")
def exported(confident_model, tmp_path_factory):
    return export_onnx(confident_model, tmp_path_factory.mktemp("onnx") / "model.onnx", *CANVAS,
                       metadata={"class_names": json.dumps([str(i) for i in range(10)])})


@pytest.mark.parametrize("photo", ["china.jpg", "flower.jpg"])
def test_onnxruntime_matches_pytorch_on_real_images(confident_model, exported, photo):
    image = load_sample_image(photo)  # 427x640 photographs
    images, image_size, scale = prepare_image(image, 240, 352, CANVAS)
    assert tuple(image_size) == (235, 352)  # scale min(240 / 427, 352 / 640) = 0.55: the long-side cap binds
    boxes, scores, labels = ort.InferenceSession(str(exported)).run(
        None, {"images": images, "image_size": image_size})
    with torch.no_grad():
        reference = confident_model(torch.from_numpy(images), torch.from_numpy(image_size)[None])[0]
    assert len(labels) == len(reference["labels"]) == 100
    np.testing.assert_array_equal(labels, reference["labels"].numpy())
    np.testing.assert_allclose(boxes, reference["boxes"].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores, reference["scores"].numpy(), rtol=1e-4, atol=1e-6)
    # boxes stay inside the content, and map back to the photo by the resize scale
    assert (boxes[:, 2] <= image_size[1] + 1e-3).all() and (boxes[:, 3] <= image_size[0] + 1e-3).all()
    assert scale == pytest.approx(image_size[0] / image.shape[0])


def test_exported_graph_has_the_documented_interface(exported):
    model = onnx.load(str(exported))
    assert [i.name for i in model.graph.input] == ["images", "image_size"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels"]
    def op_types(graph):  # the NMS sits in a branch of an If (torchvision's batched NMS skips empty inputs)
        for node in graph.node:
            yield node.op_type
            for attr in node.attribute:
                if attr.g.node:
                    yield from op_types(attr.g)

    assert "NonMaxSuppression" in set(op_types(model.graph))
    assert json.loads({p.key: p.value for p in model.metadata_props}["class_names"]) == [str(i) for i in range(10)]


def test_export_of_a_winograd_converted_model_is_the_plain_export(confident_model, exported, tmp_path, monkeypatch):
    monkeypatch.setattr(winograd_module, "MIN_CHANNELS", 64)  # the digits model's 64-channel head convs qualify
    converted = convert_to_winograd(copy.deepcopy(confident_model))
    assert any(isinstance(module, WinogradConv2d) for module in converted.modules())
    path = export_onnx(converted, tmp_path / "converted.onnx", *CANVAS)
    assert onnx.load(str(path)).graph == onnx.load(str(exported)).graph  # tracing sees the direct convolution


def test_exportable_model_runs_the_models_own_inference_path():
    class RecordingModel(torch.nn.Module):
        """Stands for any RetinaNet subclass whose inference differs: export must trace exactly that code."""

        def inference(self, images, image_sizes):
            self.seen = (images.shape, image_sizes.tolist())
            boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
            return [{"boxes": boxes, "scores": torch.tensor([0.5]), "labels": torch.tensor([7])}]

    model = RecordingModel()
    boxes, scores, labels = ExportableRetinaNet(model)(torch.zeros(1, 3, 8, 16, dtype=torch.uint8),
                                                       torch.tensor([6, 10]))
    assert model.seen == ((1, 3, 8, 16), [[6, 10]])
    assert boxes.tolist() == [[1.0, 2.0, 3.0, 4.0]] and scores.tolist() == [0.5] and labels.tolist() == [7]


def test_prepare_image_rejects_images_larger_than_the_canvas():
    with pytest.raises(ValueError, match="larger than the exported"):
        prepare_image(np.zeros((600, 400, 3), np.uint8), 240, 352, CANVAS)  # portrait: 352 x 240 does not fit


def test_export_cli_checks_against_pytorch(confident_model, tmp_path, capsys):
    weights = tmp_path / "model.pth"
    torch.save({"model": confident_model.state_dict(), "class_names": [f"digit{i}" for i in range(10)]}, weights)
    out = tmp_path / "cli.onnx"
    assert main(["export", "--config", str(CONFIG), "--weights", str(weights), "--out", str(out),
                 "--size", "128", "160"]) == 0
    printed = capsys.readouterr().out
    assert "labels equal" in printed and "128x160 input" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["class_names"])[3] == "digit3" and props["input_size"] == "128x160"


def assert_same_detections(got: tuple[np.ndarray, ...], reference: dict[str, torch.Tensor], atol: float) -> None:
    """Each image's detections equal as a set: same count per (image, label), every box within ``atol`` px of a
    reference box of that image and label with a score within 1e-5 (detections of near-equal scores may swap
    places between the two runtimes, so positions are not compared)."""
    boxes, scores, labels, image_index = got
    ref = {key: value.numpy() for key, value in reference.items()}
    assert len(labels) == len(ref["labels"])
    keys = np.stack([image_index, labels], 1)
    ref_keys = np.stack([ref["image_index"], ref["labels"]], 1)
    np.testing.assert_array_equal(np.unique(keys, axis=0, return_counts=True)[1],
                                  np.unique(ref_keys, axis=0, return_counts=True)[1])
    for box, score, key in zip(boxes, scores, keys):
        same_key = (ref_keys == key).all(1)
        distance = np.abs(ref["boxes"][same_key] - box).max(1) + 1e3 * (np.abs(ref["scores"][same_key] - score) > 1e-5)
        assert distance.min() <= atol, (key, box, score)


@pytest.fixture(scope="module")
def exported_dynamic(confident_model, tmp_path_factory):
    return export_onnx(confident_model, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", *CANVAS, dynamic=True)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("height, width", [CANVAS, (200, 300), (161, 97)])
def test_dynamic_export_matches_pytorch_at_other_sizes_and_batches(confident_model, exported_dynamic, height, width,
                                                                   batch):
    # (161, 97): odd sizes, where the TF-'SAME' paddings of the EfficientNet-Lite backbone differ from the traced size's
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(height * width + batch))
    sizes = torch.tensor([[height, width], [height - 40, width - 30]][:batch])  # the second image padded
    got = ort.InferenceSession(str(exported_dynamic)).run(None, {"images": images.numpy(),
                                                                 "image_sizes": sizes.numpy()})
    with torch.no_grad():
        reference = confident_model.inference_flat(images, sizes)
    assert len(got[2]) == 100 * batch  # the per-image cap of 100 holds for each image of the batch
    np.testing.assert_array_equal(got[3], np.repeat(np.arange(batch), 100))
    assert_same_detections(got, reference, atol=1e-3)
    # the flat output is the per-image inference, concatenated
    with torch.no_grad():
        per_image = confident_model(images, sizes)
    np.testing.assert_array_equal(torch.cat([r["labels"] for r in per_image]).numpy(), reference["labels"].numpy())


@pytest.mark.slow
def test_dynamic_graph_has_dynamic_axes(exported_dynamic):
    graph = onnx.load(str(exported_dynamic)).graph
    assert [i.name for i in graph.input] == ["images", "image_sizes"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels", "image_index"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


@pytest.mark.slow
def test_export_cli_dynamic(confident_model, tmp_path, capsys):
    weights = tmp_path / "model.pth"
    torch.save({"model": confident_model.state_dict(), "class_names": [f"digit{i}" for i in range(10)]}, weights)
    out = tmp_path / "dynamic.onnx"
    assert main(["export", "--config", str(CONFIG), "--weights", str(weights), "--out", str(out),
                 "--size", "128", "160", "--dynamic"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 random images" in printed and "labels equal" in printed and "dynamic batch and size" in printed
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["dynamic"] == "true"


def test_max_detection_difference_matches_detections_as_sets():
    reference = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]]),
                 "scores": torch.tensor([0.9, 0.9, 0.5]), "labels": torch.tensor([1, 2, 1]),
                 "image_index": torch.tensor([0, 0, 1])}
    swapped = ([[5, 5, 20, 20.0005], [0, 0, 10, 10], [1, 1, 4, 4]], [0.9, 0.9, 0.5], [2, 1, 1], [0, 0, 1])
    assert max_detection_difference(*map(np.array, swapped), reference) == pytest.approx(0.0005, abs=1e-6)
    moved = ([[0, 0, 10, 10], [5, 5, 23, 20], [1, 1, 4, 4]], [0.9, 0.9, 0.5], [1, 2, 1], [0, 0, 1])
    assert max_detection_difference(*map(np.array, moved), reference) == pytest.approx(3.0)
    relabelled = ([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.9, 0.5], [1, 2, 2], [0, 0, 1])
    assert max_detection_difference(*map(np.array, relabelled), reference) == float("inf")
    other_image = ([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.9, 0.5], [1, 2, 1], [0, 0, 0])
    assert max_detection_difference(*map(np.array, other_image), reference) == float("inf")
    rescored = ([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.9, 0.6], [1, 2, 1], [0, 0, 1])
    assert max_detection_difference(*map(np.array, rescored), reference) == float("inf")

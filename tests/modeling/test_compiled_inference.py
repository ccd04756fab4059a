"""The sync-free inference path: one graph under torch.compile, no host sync on CUDA, TEST.COMPILE, anchors."""

from __future__ import annotations

import pytest
import torch
from test_postprocess import random_inputs

from od2.config import ConfigError, get_cfg
from od2.modeling.box_coder import BoxCoder
from od2.modeling.build import convert_for_inference
from od2.modeling.postprocess import detect, detect_padded, unpad


def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8, generator=g), torch.tensor([[128, 160],
                                                                                                   [100, 130]])


def assert_same_detections(got: list[dict], expected: list[dict], atol: float = 0.0) -> None:
    """Equal detections; with ``atol`` > 0 (another kernel's rounding), scores within ``atol`` in sorted order and
    each detection found in the other list (same label, box within 1000 ``atol`` pixels) but for swaps of
    near-equal scores at the detection cap (the random head's scores crowd near 0.5)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=atol)
        if atol == 0:
            assert torch.equal(g["labels"], e["labels"]) and torch.equal(g["boxes"], e["boxes"])
            continue
        same_label = g["labels"][:, None] == e["labels"][None]
        close_box = ((g["boxes"][:, None] - e["boxes"][None]).abs() <= atol * 1000).all(-1)
        close_score = (g["scores"][:, None] - e["scores"][None]).abs() <= atol
        found = (same_label & close_box & close_score).any(1)
        assert found.float().mean() >= 0.95, f"{int((~found).sum())} of {len(found)} detections differ"


def test_padded_postprocess_is_one_graph_without_host_syncs():
    """fullgraph=True fails on any graph break: .item(), .tolist(), nonzero, boolean-mask indexing and other
    data-dependent shapes would each be one."""
    torch._dynamo.reset()
    logits, deltas, anchors, image_sizes = random_inputs(0)
    settings = dict(score_thresh=0.05, topk=1000, nms_thresh=0.5, max_detections=100)
    compiled = torch.compile(detect_padded, fullgraph=True, backend="eager", dynamic=False)
    got = unpad(compiled(logits, deltas, anchors, image_sizes, BoxCoder(), **settings))
    assert_same_detections(got, detect(logits, deltas, anchors, image_sizes, BoxCoder(), **settings))


@pytest.mark.slow
def test_padded_inference_is_one_graph_without_host_syncs(confident_model):
    """The whole model's inference (normalisation, backbone, neck, head, anchors, postprocess) as one graph."""
    torch._dynamo.reset()
    images, sizes = digits_batch()
    compiled = torch.compile(confident_model.inference_padded, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        got = unpad(compiled(images, sizes))
        expected = confident_model.inference(images, sizes)  # the CPU path: batched_nms on the kept candidates
    assert sum(len(d["scores"]) for d in expected) == 2 * confident_model.max_detections
    assert_same_detections(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inference_has_no_host_sync(confident_model):
    model = confident_model.cuda()
    images, sizes = (t.cuda() for t in digits_batch())
    try:
        with torch.no_grad():
            model.inference_padded(images, sizes)  # warm-up: the anchors' first grid copies its cells once
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            padded = model.inference_padded(images, sizes)
            torch.cuda.set_sync_debug_mode("default")
            expected = model.cpu().inference(images.cpu(), sizes.cpu())
    finally:
        torch.cuda.set_sync_debug_mode("default")
        model.cpu()
    assert_same_detections([{k: v.cpu() for k, v in d.items()} for d in unpad(padded)], expected, atol=1e-4)


def test_anchors_are_cached_per_size_and_device(confident_model):
    generator = confident_model.anchor_generator
    first = generator([(16, 20), (8, 10)], torch.device("cpu"))
    assert generator([(16, 20), (8, 10)], torch.device("cpu")) is first  # a cache hit: nothing recomputed
    other = generator([(8, 8), (4, 4)], torch.device("cpu"))
    assert other is not first and other[0].shape == (8 * 8 * generator.num_anchors, 4)
    if torch.cuda.is_available():
        on_gpu = generator([(16, 20), (8, 10)], torch.device("cuda"))
        assert on_gpu is not first and all(a.is_cuda for a in on_gpu)
        assert all(torch.equal(a.cpu(), b) for a, b in zip(on_gpu, first))


def test_test_compile_rejects_an_unknown_mode_and_a_model_without_compiled_inference(confident_model):
    cfg = get_cfg()
    cfg.TEST.COMPILE = "reduce_overhead"
    with pytest.raises(ConfigError, match="TEST.COMPILE.*reduce-overhead"):
        convert_for_inference(confident_model, cfg)
    cfg.TEST.COMPILE = "default"
    with pytest.raises(ConfigError, match="TEST.COMPILE.*compile_inference"):
        convert_for_inference(torch.nn.Conv2d(3, 3, 1), cfg)


@pytest.mark.slow
def test_test_compile_default_gives_the_eager_detections(confident_model):
    """TEST.COMPILE=default through convert_for_inference (inductor on the CPU: its C++ compile takes a while), on
    the fixed 160 x 160 canvas of MAX_SIZE_TEST 160, to which the model pads the 128 x 160 batch itself: the
    detections of the eager model on the batch padded to that canvas."""
    torch._dynamo.reset()
    images, sizes = digits_batch()
    with torch.no_grad():
        expected = confident_model.inference(torch.nn.functional.pad(images, (0, 0, 0, 32)), sizes)
        cfg = get_cfg()
        cfg.TEST.COMPILE, cfg.INPUT.MAX_SIZE_TEST = "default", 160
        model = convert_for_inference(confident_model, cfg)
        try:
            assert model.compiled_inference.od2_settings == ("default", (160, 160))
            got = model.inference(images, sizes)
        finally:
            model.compiled_inference = None
    assert_same_detections(got, expected, atol=1e-4)

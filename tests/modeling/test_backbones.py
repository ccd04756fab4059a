"""Backbones: output contract, freezing, frozen BN, EfficientNet-Lite0 weights and TF padding, checkpoint loading
(EfficientNet-Lite1/2, the reference network and old checkpoints: test_efficientnet_lite.py)."""

from __future__ import annotations

import math

import matplotlib.cbook
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.layers import Conv2dSame as TimmConv2dSame
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from od2.layers.same_padding import Conv2dSame
from od2.modeling.backbones import (
    BACKBONES,
    EfficientNetLite0,
    ResNetBackbone,
    build_backbone,
    convert_to_frozen_bn,
    load_matching_state_dict,
)
from od2.modeling.backbones.efficientnet_lite import NormAfterConv, pretrained_weights_path

RESNET_CHANNELS = {18: (128, 256, 512), 34: (128, 256, 512), 50: (512, 1024, 2048), 101: (512, 1024, 2048)}


@pytest.fixture(scope="module")
def lite0_file() -> dict[str, torch.Tensor]:
    return torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return EfficientNetLite0(pretrained=True).eval()


def _expected_shapes(channels: tuple[int, int, int], h: int, w: int) -> dict[str, tuple[int, ...]]:
    return {
        name: (1, c, math.ceil(h / s), math.ceil(w / s))
        for name, c, s in zip(("C3", "C4", "C5"), channels, (8, 16, 32))
    }


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_resnet_output_contract(depth: int) -> None:
    model = ResNetBackbone(depth).eval()
    channels = RESNET_CHANNELS[depth]
    assert model.out_channels == dict(zip(("C3", "C4", "C5"), channels))
    assert model.strides == {"C3": 8, "C4": 16, "C5": 32}
    assert not hasattr(model, "fc") and not hasattr(model, "avgpool")
    h, w = (97, 131) if depth < 101 else (33, 65)
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert {k: tuple(v.shape) for k, v in out.items()} == _expected_shapes(channels, h, w)


@pytest.mark.parametrize("size", [(97, 131), (64, 96), (65, 63)])
def test_lite0_output_contract(lite0: EfficientNetLite0, size: tuple[int, int]) -> None:
    assert lite0.out_channels == {"C3": 40, "C4": 112, "C5": 320}
    assert lite0.strides == {"C3": 8, "C4": 16, "C5": 32}
    with torch.no_grad():
        out = lite0(torch.randn(1, 3, *size))
    assert {k: tuple(v.shape) for k, v in out.items()} == _expected_shapes((40, 112, 320), *size)


def test_build_backbone_names_and_pixel_stats() -> None:
    assert isinstance(build_backbone("resnet", depth=18), ResNetBackbone)
    assert isinstance(build_backbone("efficientnet_lite0", pretrained=False), EfficientNetLite0)
    with pytest.raises(ValueError, match="efficientnet_lite0.*resnet"):
        build_backbone("resnet5O")
    for entry in BACKBONES.values():
        assert len(entry.constructor.pixel_mean) == 3 and len(entry.constructor.pixel_std) == 3
    assert ResNetBackbone.pixel_mean == (123.675, 116.28, 103.53)
    assert EfficientNetLite0.pixel_mean == EfficientNetLite0.pixel_std == (127.5, 127.5, 127.5)


# ---------------------------------------------------------------------------------------------- freezing / norms


_STAGE_PREFIXES = (("conv1.", "bn1."), ("layer1.",), ("layer2.",), ("layer3.",), ("layer4.",))


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 4, 5])
def test_resnet_freeze_at(freeze_at: int) -> None:
    torch.manual_seed(0)
    model = ResNetBackbone(18, norm_layer=nn.BatchNorm2d, freeze_at=freeze_at).train()
    frozen_prefixes = tuple(p for stage in _STAGE_PREFIXES[:freeze_at] for p in stage)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    # Frozen stages stop updating BN statistics; trainable stages keep plain BatchNorm.
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            expect_frozen = (name + ".").startswith(frozen_prefixes)
            assert isinstance(m, FrozenBatchNorm2d) == expect_frozen, name

    if freeze_at == len(_STAGE_PREFIXES):
        assert not any(p.requires_grad for p in model.parameters())
        return
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_resnet_invalid_args() -> None:
    with pytest.raises(ValueError, match="depth"):
        ResNetBackbone(152)
    with pytest.raises(ValueError, match="freeze_at"):
        ResNetBackbone(18, freeze_at=6)


def test_resnet_group_norm() -> None:
    model = ResNetBackbone(18, norm_layer=lambda c: nn.GroupNorm(32, c))
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32))["C5"].shape == (1, 512, 1, 1)


def test_frozen_bn_default_has_no_trainable_norm_and_is_mode_independent(lite0: EfficientNetLite0) -> None:
    resnet = ResNetBackbone(18)
    for model in (resnet, lite0):
        norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert all(len(list(m.parameters())) == 0 for m in norms)
    # Every trainable ResNet parameter is a conv weight.
    assert all(p.dim() == 4 for p in resnet.parameters())

    x = torch.randn(2, 3, 64, 64)
    for model in (resnet, lite0):
        with torch.no_grad():
            eval_out = model.eval()(x)
            train_out = model.train()(x)
        model.eval()
        for k in eval_out:
            torch.testing.assert_close(train_out[k], eval_out[k], rtol=0, atol=0)


def test_convert_to_frozen_bn_matches_eval_batchnorm() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.BatchNorm2d(8, eps=1e-3), nn.ReLU()))
    bn = net[1][0]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(1e-4, 1e-2)  # small variances make the eps visible
    x = torch.randn(2, 3, 10, 10)
    expected = net.eval()(x)
    converted = convert_to_frozen_bn(net)
    assert converted is net and isinstance(net[1][0], FrozenBatchNorm2d)
    assert net[1][0].eps == 1e-3
    assert len(list(net[1].parameters())) == 0
    torch.testing.assert_close(net.train()(x), expected)

    single = convert_to_frozen_bn(nn.BatchNorm2d(4))
    assert isinstance(single, FrozenBatchNorm2d)


# -------------------------------------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_loads_every_tensor(lite0: EfficientNetLite0, lite0_file: dict[str, torch.Tensor]) -> None:
    # Spot checks written by hand from the file's layout (lukemelas: 16 flat blocks) against timm's (7 stages).
    assert torch.equal(lite0.conv_stem.weight, lite0_file["_conv_stem.weight"])
    assert torch.equal(lite0.bn1.norm.running_var, lite0_file["_bn0.running_var"])
    assert not hasattr(lite0.blocks[0][0], "conv_pwl")  # block 0 has no expand conv: depthwise then pointwise
    assert torch.equal(lite0.blocks[0][0].bn1.norm.bias, lite0_file["_blocks.0._bn1.bias"])
    assert torch.equal(lite0.blocks[0][0].conv_pw.weight, lite0_file["_blocks.0._project_conv.weight"])
    assert torch.equal(lite0.blocks[2][1].conv_dw.weight, lite0_file["_blocks.4._depthwise_conv.weight"])
    assert torch.equal(lite0.blocks[4][0].bn1.norm.weight, lite0_file["_blocks.8._bn0.weight"])
    assert torch.equal(lite0.blocks[6][0].bn3.norm.running_mean, lite0_file["_blocks.15._bn2.running_mean"])
    assert sum(len(stage) for stage in lite0.blocks) == 16

    unused = EfficientNetLite0(pretrained=False, norm_layer=lambda c: FrozenBatchNorm2d(c, 1e-3)).load_pretrained()
    head_keys = {k for k in lite0_file if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert set(unused) == head_keys | {k for k in lite0_file if k.endswith("num_batches_tracked")}
    assert all(m.eps == 1e-3 for m in lite0.modules() if isinstance(m, FrozenBatchNorm2d))


def test_lite0_norm_options() -> None:
    scratch = EfficientNetLite0(pretrained=False)
    bns = [m for m in scratch.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 48 and all(m.eps == 1e-3 and m.weight.requires_grad for m in bns)
    # A trainable BatchNorm gets TF's eps whatever its factory said.
    tuned = EfficientNetLite0(pretrained=True, norm_layer=nn.BatchNorm2d)
    assert all(m.eps == 1e-3 for m in tuned.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="BatchNorm"):
        EfficientNetLite0(pretrained=True, norm_layer=lambda c: nn.GroupNorm(8, c))


def test_lite0_is_timms_tf_efficientnet_lite0_with_tf_same_padding(lite0: EfficientNetLite0) -> None:
    reference = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4))
    # Same convs in the same places; each norm one level down (``bn1.norm.weight`` for timm's ``bn1.weight``).
    timm_keys = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    ours = {k.replace(".norm.", ".") for k in lite0.state_dict()}
    assert ours == timm_keys
    strided = [m for m in lite0.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert len(strided) == 5 and all(isinstance(m, TimmConv2dSame) for m in strided)  # stem + 4 stage starts
    assert all(isinstance(m.norm, FrozenBatchNorm2d) for m in lite0.modules() if isinstance(m, NormAfterConv))


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("freeze_at", [1, 3])
def test_lite0_freeze_at_fixes_the_bn_statistics_of_frozen_stages(freeze_at: int) -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0(pretrained=False, norm_layer=nn.BatchNorm2d, freeze_at=freeze_at).train()
    num_frozen_stages = {1: 0, 3: 3}[freeze_at]  # the stem plus stages 0..2 end at stride 8 = 2**3
    frozen = [model.bn1, *model.blocks[:num_frozen_stages]]
    trainable = list(model.blocks[num_frozen_stages:])
    before = [_bn_buffers(m) for m in frozen + trainable]
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = [_bn_buffers(m) for m in frozen + trainable]
    for module, old, new in zip(frozen + trainable, before, after):
        moved = any(not torch.equal(old[k], new[k]) for k in old)
        assert moved == (module not in frozen)
    assert all(isinstance(m, FrozenBatchNorm2d) for f in frozen for m in f.modules() if hasattr(m, "running_var"))
    assert not any(p.requires_grad for f in [model.conv_stem, *frozen] for p in f.parameters())


def test_lite0_freeze_keeps_the_state_dict_keys() -> None:
    unfrozen = EfficientNetLite0(pretrained=False, norm_layer=nn.BatchNorm2d, freeze_at=0)
    frozen = EfficientNetLite0(pretrained=False, norm_layer=nn.BatchNorm2d, freeze_at=3)
    frozen_prefixes = ("bn1.", "blocks.0.", "blocks.1.", "blocks.2.")
    counters = {k for k in unfrozen.state_dict() if k.startswith(frozen_prefixes) and k.endswith("num_batches_tracked")}
    # FrozenBatchNorm2d keeps weight, bias and statistics under the same names; only the step counter goes.
    assert set(frozen.state_dict()) == set(unfrozen.state_dict()) - counters
    frozen.load_state_dict(unfrozen.state_dict(), strict=True)  # a checkpoint of the unfrozen layout still loads
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = unfrozen.eval()(x)
        for key, value in frozen.eval()(x).items():
            torch.testing.assert_close(value, expected[key])

def test_lite0_gradients_reach_every_parameter(lite0: EfficientNetLite0) -> None:
    lite0.zero_grad(set_to_none=True)
    out = lite0(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    params = dict(lite0.named_parameters())
    assert params and all(p.dim() == 4 for p in params.values())  # conv weights only: the norms are frozen
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    lite0.zero_grad(set_to_none=True)


def test_lite0_drop_path() -> None:
    model = EfficientNetLite0(pretrained=True, drop_path_rate=0.5)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        reference = EfficientNetLite0(pretrained=True).eval()(x)["C5"]
        torch.testing.assert_close(model.eval()(x)["C5"], reference)
        torch.manual_seed(0)
        first = model.train()(x)["C5"]
        torch.manual_seed(1)
        second = model(x)["C5"]
    assert not torch.allclose(first, reference) and not torch.allclose(first, second)


@pytest.mark.parametrize(
    ("kernel", "height", "top", "width", "left"),
    # TF "SAME", stride 2: total pad = max((ceil(n/2)-1)*2 + k - n, 0), the smaller half on top/left.
    [(3, 8, 0, 7, 1), (5, 7, 2, 8, 1), (3, 1, 1, 2, 0)],
)
def test_conv2d_same_matches_tf_padding(kernel: int, height: int, top: int, width: int, left: int) -> None:
    conv = Conv2dSame(1, 1, kernel, stride=2)
    nn.init.ones_(conv.weight)
    x = torch.randn(1, 1, height, width)
    out = conv(x)
    assert out.shape == (1, 1, math.ceil(height / 2), math.ceil(width / 2))
    # Reference: box sums over windows starting at (2i - top, 2j - left), clipped to the image (zero padding).
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            r0, c0 = 2 * i - top, 2 * j - left
            window = x[0, 0, max(r0, 0) : r0 + kernel, max(c0, 0) : c0 + kernel]
            torch.testing.assert_close(out[0, 0, i, j], window.sum(), rtol=1e-5, atol=1e-5)


def _lite0_classifier(backbone: EfficientNetLite0, state: dict[str, torch.Tensor]) -> nn.Module:
    """ImageNet classifier = backbone + the file's ``_conv_head`` / ``_bn1`` / ``_fc`` (test-only)."""
    head_bn = FrozenBatchNorm2d(1280, eps=1e-3)
    head_bn.load_state_dict({k: state[f"_bn1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")})
    head_conv = nn.Conv2d(320, 1280, 1, bias=False)
    head_conv.weight.data.copy_(state["_conv_head.weight"])
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    head = nn.Sequential(head_conv, head_bn, nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    return nn.Sequential(_Tap(backbone, "C5"), head).eval()


class _Tap(nn.Module):
    def __init__(self, backbone: nn.Module, key: str) -> None:
        super().__init__()
        self.backbone, self.key = backbone, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[self.key]


def _photos() -> torch.Tensor:
    """Three real photographs, centre-cropped and resized to 224, ``float [3, 3, 224, 224]`` on the 0-255 scale:
    matplotlib's grace_hopper.jpg and scikit-learn's china.jpg / flower.jpg (both are od2 dependencies)."""
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        arrays = [np.asarray(im.convert("RGB"))]
    arrays += [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    images = [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]
    out = []
    for im in images:
        h, w = im.shape[-2:]
        s = min(h, w)
        crop = im[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s].float()
        out.append(F.interpolate(crop[None], size=(224, 224), mode="bilinear", antialias=True)[0])
    return torch.stack(out)


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_lite0_pretrained_classifies_real_photos(lite0: EfficientNetLite0, lite0_file: dict[str, torch.Tensor]) -> None:
    """The strongest end-to-end check of the port (block order, padding, eps, taps): ImageNet top-1 on photos."""
    classifier = _lite0_classifier(lite0, lite0_file)
    photos = _normalise(_photos(), EfficientNetLite0.pixel_mean, EfficientNetLite0.pixel_std)
    with torch.no_grad():
        top1 = classifier(photos).argmax(1).tolist()
        grey = classifier(torch.zeros(1, 3, 224, 224))  # 127.5 grey normalises to 0
        noise = classifier(torch.rand(2, 3, 224, 224) * 2 - 1)
        c5 = lite0(photos)["C5"]
    # ImageNet ids: 652 military uniform, 698 palace, 985 daisy.
    assert top1 == [652, 698, 985]
    assert torch.isfinite(grey).all() and torch.isfinite(noise).all()
    assert torch.isfinite(c5).all() and 0.01 < c5.std() < 100 and c5.abs().mean() < 10


def test_lite0_input_normalisation_matches_stem_statistics(lite0_file: dict[str, torch.Tensor]) -> None:
    """Which input scale were the weights trained on? The stem BN's running statistics say [-1, 1].

    Mean: the running mean is linear in the input mean, ``rm = S @ m`` with ``S`` the per-channel sums of the
    stem kernel; solving for ``m`` fits to <1% and gives ``|m| < 0.2``, the ImageNet mean pixel in [-1, 1] units
    (-0.03, -0.09, -0.19) rather than in [0, 1] units (0.49, 0.46, 0.41) or 0-255. Variance: real photographs in
    [-1, 1] give pre-BN variances about 1.1x the running ones (geometric mean over live channels), whereas
    ImageNet mean/std standardisation gives about 5x and [0, 1] about 0.3x.
    """
    w = lite0_file["_conv_stem.weight"].double()
    running_mean = lite0_file["_bn0.running_mean"].double()
    running_var = lite0_file["_bn0.running_var"]
    s = w.sum(dim=(2, 3))
    m = torch.linalg.lstsq(s, running_mean[:, None]).solution[:, 0]
    assert (s @ m - running_mean).norm() < 0.01 * running_mean.norm()
    assert m.abs().max() < 0.2

    conv = Conv2dSame(3, 32, 3, stride=2)
    conv.weight.data.copy_(lite0_file["_conv_stem.weight"])
    live = running_var > 1e-3  # a few channels are dead (zero kernel, zero variance)
    photos = _photos()

    def var_ratio(mean: tuple[float, ...], std: tuple[float, ...]) -> float:
        with torch.no_grad():
            var = conv(_normalise(photos, mean, std)).var(dim=(0, 2, 3))
        return (var[live] / running_var[live]).log().mean().exp().item()

    assert 0.7 < var_ratio(EfficientNetLite0.pixel_mean, EfficientNetLite0.pixel_std) < 1.5
    assert var_ratio(ResNetBackbone.pixel_mean, ResNetBackbone.pixel_std) > 3
    assert var_ratio((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)) < 0.5


# ------------------------------------------------------------------------------------------ checkpoint loading


def test_load_matching_state_dict_plain_and_prefixed() -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    state = source.state_dict()

    plain = ResNetBackbone(18)
    report = load_matching_state_dict(plain, state)
    assert report.prefix == "" and report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert torch.equal(plain.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert torch.equal(plain.conv1.weight, state["conv1.weight"])

    prefixed = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    del prefixed["backbone.body.layer4.1.conv2.weight"]
    prefixed["backbone.body.layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    prefixed["head.cls_logits.weight"] = torch.zeros(3)
    target = ResNetBackbone(18, norm_layer=nn.BatchNorm2d)
    report = load_matching_state_dict(target, prefixed)
    assert report.prefix == "backbone.body."
    assert report.missing == ["layer1.0.conv1.weight", "layer4.1.conv2.weight"]
    assert report.unexpected == ["head.cls_logits.weight"]
    assert report.mismatched == ["layer1.0.conv1.weight: (1, 1, 1, 1) vs (64, 64, 3, 3)"]
    assert torch.equal(target.layer2[0].downsample[1].running_mean, state["layer2.0.downsample.1.running_mean"])

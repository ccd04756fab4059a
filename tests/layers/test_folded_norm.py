"""Folded conv + affine norm against the unfolded modules, and od2's ResNet against torchvision's."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from od2.layers.folded_norm import affine_of, conv_norm
from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones.resnet import ResNetBackbone


def randomised(norm: nn.Module, seed: int) -> nn.Module:
    """The norm with random affine values and running statistics (defaults would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    channels = norm.running_mean.numel()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            if getattr(norm, name, None) is not None:
                getattr(norm, name).copy_(torch.randn(channels, generator=g))
        norm.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return norm


NORMS = {
    "FrozenBN": lambda: FrozenBatchNorm2d(6),
    "BN eval": lambda: nn.BatchNorm2d(6).eval(),
    "BN eval, no affine": lambda: nn.BatchNorm2d(6, affine=False).eval(),
    "BN train": lambda: nn.BatchNorm2d(6).train(),
    "GN": lambda: nn.GroupNorm(2, 6),
}


@pytest.mark.parametrize("norm_name", NORMS)
@pytest.mark.parametrize("bias,stride,groups", [(False, 1, 1), (True, 2, 1), (False, 1, 3)])
def test_conv_norm_equals_norm_of_conv_with_the_same_gradients(norm_name, bias, stride, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(3 * groups if groups > 1 else 4, 6, 3, stride=stride, padding=1, bias=bias, groups=groups)
    make = NORMS[norm_name]
    norm = make()
    if norm_name != "GN":
        norm = randomised(norm, 1)
    norm_copy = make()
    norm_copy.load_state_dict(norm.state_dict())
    x = torch.randn(2, conv.in_channels, 9, 11)
    folded = conv_norm(conv, norm, x)
    reference = norm_copy(conv(x))
    torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-5)
    assert (affine_of(norm) is None) == (norm_name in ("BN train", "GN"))

    weight_grads = []
    for out in (folded, reference):
        conv.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward(retain_graph=True)
        weight_grads.append(conv.weight.grad.clone())
    torch.testing.assert_close(weight_grads[0], weight_grads[1], rtol=1e-4, atol=1e-5)


def test_trainable_batchnorm_in_eval_mode_folds_with_gradients_to_its_affine_parameters():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(4, 6, 3, padding=1, bias=False), randomised(nn.BatchNorm2d(6).eval(), 2)
    x = torch.randn(2, 4, 8, 8)
    conv_norm(conv, norm, x).square().sum().backward()
    folded = (norm.weight.grad.clone(), norm.bias.grad.clone())
    norm.zero_grad()
    norm(conv(x)).square().sum().backward()
    torch.testing.assert_close(folded, (norm.weight.grad, norm.bias.grad), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_resnet_backbone_computes_what_torchvision_resnet_computes(depth, mode):
    """Same state_dict, same C3/C4/C5 as torchvision's resnet with BatchNorm: folded in eval, unfolded in train."""
    torch.manual_seed(0)
    ours = ResNetBackbone(depth, norm_layer=nn.BatchNorm2d)
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for module in theirs.modules():
        if isinstance(module, nn.BatchNorm2d):
            randomised(module, depth)
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"fc.weight", "fc.bias"}
    getattr(ours, mode)(), getattr(theirs, mode)()
    x = torch.randn(2, 3, 64, 96)
    c5 = ours(x)["C5"]
    t = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x))))
    t = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(t))))
    # 50 layers of random affine norms make large activations: compare relative to their scale
    assert (c5 - t).abs().max() <= 1e-5 * t.abs().max()

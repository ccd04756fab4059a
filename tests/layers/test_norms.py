"""get_norm names, the one-pass FrozenBatchNorm2d, and SyncBN conversion."""

import pytest
import torch
import torch.nn as nn
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBN

from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.layers.norms import SyncBatchNorm2d, convert_sync_batchnorm, get_norm


def test_frozen_bn_matches_torchvision_and_batchnorm_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8, eps=1e-3).eval()
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.1, 3)
    ours, theirs = FrozenBatchNorm2d(8, eps=1e-3), TorchvisionFrozenBN(8, eps=1e-3)
    for frozen in (ours, theirs):
        frozen.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x), bn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert not list(ours.parameters())


def test_convert_sync_batchnorm_only_touches_syncbn_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), get_norm("SyncBN", 8), nn.Sequential(get_norm("BN", 8)))
    assert isinstance(model[1], SyncBatchNorm2d)
    model[1].running_mean.fill_(0.5)
    converted = convert_sync_batchnorm(model)
    assert isinstance(converted[1], nn.SyncBatchNorm)
    assert torch.all(converted[1].running_mean == 0.5)
    assert type(converted[2][0]) is nn.BatchNorm2d


@pytest.mark.parametrize("name, kind", [("BN", nn.BatchNorm2d), ("GN", nn.GroupNorm), ("FrozenBN", FrozenBatchNorm2d)])
def test_get_norm_names(name, kind):
    assert isinstance(get_norm(name, 64), kind)
    assert get_norm("", 64) is None

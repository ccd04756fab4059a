"""get_norm names, the one-pass FrozenBatchNorm2d, and SyncBN conversion."""

import logging

import pytest
import torch
import torch.distributed as dist
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
    converted = convert_sync_batchnorm(model, torch.device("cuda"))
    assert isinstance(converted[1], nn.SyncBatchNorm)
    assert torch.all(converted[1].running_mean == 0.5)
    assert type(converted[2][0]) is nn.BatchNorm2d


@pytest.fixture
def one_process_gloo_group(tmp_path):
    """A one-process gloo group, as torchrun --nproc_per_node=1 makes on a CPU machine."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_syncbn_trains_as_per_process_bn_on_cpu_under_a_process_group(one_process_gloo_group, caplog):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), get_norm("SyncBN", 8), nn.Sequential(get_norm("SyncBN", 8)))
    with caplog.at_level(logging.WARNING, logger="od2.layers.norms"):
        converted = convert_sync_batchnorm(model, torch.device("cpu"))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert len(caplog.records) == 1 and "per-process BatchNorm on CPU" in caplog.text
    x = torch.randn(4, 3, 9, 9)
    y = converted.train()(x)  # nn.SyncBatchNorm raises here: it needs a GPU once a process group exists
    # Training-mode BN: each channel of the output has the batch's zero mean and unit variance.
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(8), rtol=0, atol=1e-5)


def test_convert_sync_batchnorm_is_silent_without_syncbn_layers(caplog):
    with caplog.at_level(logging.WARNING, logger="od2.layers.norms"):
        convert_sync_batchnorm(nn.Sequential(get_norm("BN", 8)), torch.device("cpu"))
    assert not caplog.records


@pytest.mark.parametrize("name, kind", [("BN", nn.BatchNorm2d), ("GN", nn.GroupNorm), ("FrozenBN", FrozenBatchNorm2d)])
def test_get_norm_names(name, kind):
    assert isinstance(get_norm(name, 64), kind)
    assert get_norm("", 64) is None

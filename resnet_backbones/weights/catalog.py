"""Fetch a weight source (a local path or a named source) and read it.

A source is a local path or one of:

- ``torchvision://ResNet101_Weights.IMAGENET1K_V2``: fetched through torchvision's own weights API
  (``torchvision.models.get_weight``), cached by torch hub.
- ``detectron2://ImageNetPretrained/MSRA/R-50.pkl``: a file of detectron2's model zoo (MSRA caffe2
  R-50/R-101, FAIR X-101-32x8d, or any detectron2 model), downloaded once into the cache folder.
- ``timm://resnet50.a1_in1k``: a timm model's pretrained state dict (needs ``pip install timm``).
- ``https://...``: any URL, downloaded once into the cache folder.

The cache folder is ``$RESNET_BACKBONES_CACHE``, else ``~/.cache/resnet_backbones``.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import WeightsError
from .conventions import known_conventions  # noqa: F401  (re-exported)
from .formats import load_file

__all__ = ["DETECTRON2_PREFIX", "FetchedWeights", "cache_dir", "fetch_source", "known_conventions"]

DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"


@dataclass(frozen=True)
class FetchedWeights:
    """A fetched source: the local file to read, or the state dict a library returned, with the format it
    implies (as torchvision's ``Weights`` record, ``torchvision/models/_api.py``, keeps a checkpoint's
    location with what it implies).

    format: "torchvision" or "timm" for a state dict of those libraries, "auto" for a file.
    """

    format: str
    path: str = ""
    state: Optional[Dict[str, Any]] = None

    def load(self) -> Any:
        """The checkpoint object: the state dict in memory, or the file read safely (:func:`load_file`)."""
        return load_file(self.path) if self.state is None else self.state


def cache_dir() -> str:
    return os.environ.get("RESNET_BACKBONES_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "resnet_backbones"))


def _download(url: str) -> str:
    from torch.hub import download_url_to_file

    dest = os.path.join(cache_dir(), url.split("://", 1)[1])
    if os.path.isfile(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        download_url_to_file(url, dest, progress=True)  # writes a temp file and renames: atomic
    except Exception as e:
        raise WeightsError(
            f"could not download {url} ({e}). Without network access, download it elsewhere and pass "
            f"the local path, or place it at {dest}"
        ) from e
    return dest


def fetch_source(source: str) -> FetchedWeights:
    """Fetch ``source``: download a named file into the cache, or have torchvision/timm return the state dict."""
    if source.startswith("torchvision://"):
        import torchvision

        name = source[len("torchvision://"):]
        try:
            weights = torchvision.models.get_weight(name)
        except (ValueError, KeyError, AttributeError) as e:
            raise WeightsError(f"{source}: torchvision knows no weights named {name!r} ({e})") from e
        try:
            return FetchedWeights("torchvision", state=weights.get_state_dict(progress=True, check_hash=True))
        except Exception as e:
            raise WeightsError(
                f"could not fetch {source} ({e}). Without network access, save "
                f"torchvision.models.{name.split('_Weights')[0].lower()}(weights='{name.split('.')[-1]}')"
                ".state_dict() elsewhere and pass that file"
            ) from e
    if source.startswith("timm://"):
        try:
            import timm
        except ImportError as e:
            raise WeightsError(f"{source} needs timm: pip install timm (or pass a saved timm checkpoint file)") from e
        try:
            return FetchedWeights("timm", state=timm.create_model(source[len("timm://"):], pretrained=True).state_dict())
        except Exception as e:
            raise WeightsError(f"could not fetch {source} through timm ({e})") from e
    if source.startswith("detectron2://"):
        return FetchedWeights("auto", path=_download(DETECTRON2_PREFIX + source[len("detectron2://"):]))
    if source.startswith(("https://", "http://")):
        return FetchedWeights("auto", path=_download(source))
    return FetchedWeights("auto", path=source)

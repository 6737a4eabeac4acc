"""Read ImageNet/detection checkpoints of every common ResNet format and rename them to ours.

Formats (``format=``):
- ``torchvision``: ``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer1.0.downsample.0.*``, ``fc.*``.
- ``timm``: timm's ResNet/ResNeXt use torchvision's names; its training checkpoints wrap them in
  ``state_dict``/``state_dict_ema``. Deep-stem variants (ResNet-D, ``conv1.0.weight``) are refused.
- ``caffe2``: MSRA/FAIR Detectron ``.pkl`` blobs (``conv1_w``, ``res_conv1_bn_s``,
  ``res2_0_branch2a_w``, ``res2_0_branch1_bn_b``), optionally under ``blobs`` or ``model``.
- ``detectron2``: ``{"model": {...}}`` with ``backbone.bottom_up.res2.0.conv1.weight`` (FPN models) or
  ``backbone.res2...`` names; also the files written by ``tools/convert_weights.py``.
- ``resnet_backbones``: the backbone file of this library's classification pretraining
  (``tools/pretrain_net.py``, :mod:`.pretrained`): the body's own names, with the input conventions and the
  architecture it was trained with.

Each format is a row of :data:`FORMAT_TABLE` (how to recognise it, how to read it); :func:`parse_weights`
detects a file's format by asking every row, and exactly one must answer.

Weight files are untrusted input: ``.pkl`` files go through :class:`RestrictedUnpickler` (numpy arrays
and plain containers only) and everything else through ``torch.load(weights_only=True)``.
"""
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import torch

from ..errors import WeightsError
from .conventions import FAIR_RESNEXT_CONVENTIONS, MSRA_CONVENTIONS, TORCHVISION_CONVENTIONS, Conventions
from .pretrained import BACKBONE_FILE_FORMAT, read_backbone_file

__all__ = [
    "FORMATS",
    "FORMAT_TABLE",
    "WeightFormat",
    "Weights",
    "RestrictedUnpickler",
    "load_pickle",
    "load_file",
    "parse_weights",
]



@dataclass
class Weights:
    """A checkpoint renamed to our names.

    body: tensors of the ResNet body, named as in :class:`~resnet_backbones.modeling.ResNet`
        (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``; a classifier as ``linear.*``).
    extra: the remaining tensors of a detectron2 checkpoint (FPN, heads), with their full names.
    format: the detected or requested format.
    conventions: input conventions the source implies, or None where the file does not say.
    dropped: source keys dropped on purpose (BatchNorm counters, caffe2 momentum blobs).
    architecture: what the body was built as, where the file says (``resnet_backbones`` files:
        :func:`~resnet_backbones.weights.pretrained.body_architecture`), else None.
    """

    body: Dict[str, torch.Tensor]
    format: str
    conventions: Optional[Conventions]
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    source: str = ""
    architecture: Optional[Dict[str, Any]] = None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain containers; refuses every other global.

    A pickle can name any importable callable (``os.system``, ...) to be run while loading; only
    the globals numpy needs to rebuild arrays are admitted here, so a hostile file raises
    :class:`WeightsError` before anything it names is called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise WeightsError(
                f"refusing to unpickle {module}.{name}: weight .pkl files may hold only numpy arrays and "
                "plain containers (the file is malformed or hostile)"
            )
        return super().find_class(module, name)


def load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (latin1 for Python 2 caffe2 pickles)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except WeightsError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise WeightsError(f"not a readable .pkl weight file: {e}") from e


def load_file(path: str) -> Any:
    """Read a weight file safely: ``.pkl`` by the restricted unpickler, others by torch.load(weights_only)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weight file {path!r} does not exist")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return load_pickle(f.read())
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path!r} holds objects other than tensors and plain containers; torch.load(weights_only=True) "
            f"refused it ({str(e).splitlines()[0]}). Re-save only its state_dict."
        ) from e
    except Exception as e:
        raise WeightsError(f"cannot read weight file {path!r}: {e}") from e


# Records (dicts of plain values) that a file's wrapper may carry beside its state dict.
_META_RECORDS = ("conventions", "architecture", "pretraining")


def _unwrap(obj: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Return (state dict, metadata) from the wrappers used by torchvision/timm/detectron2/caffe2."""
    meta: Dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        raise WeightsError(f"a weight file must hold a dict of tensors, got {type(obj).__name__}")
    for key in ("model", "state_dict", "blobs", "model_state"):
        if key in obj and isinstance(obj[key], Mapping):
            meta = {k: v for k, v in obj.items() if k != key and not isinstance(v, (Mapping, torch.Tensor, np.ndarray))}
            for record in _META_RECORDS:
                if isinstance(obj.get(record), Mapping):
                    meta[record] = obj[record]
            obj = obj[key]
            break
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, meta


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise WeightsError(f"entry {name!r} is a {type(value).__name__}, not an array")


def _rename_body(state: Dict[str, torch.Tensor], name_of: Callable[[str], Optional[str]], what: str) -> Dict[str, torch.Tensor]:
    """``state`` under the names ``name_of`` gives; a key it has no name for (None) is an error naming ``what``."""
    body, unknown = {}, []
    for k, v in state.items():
        name = name_of(k)
        if name is None:
            unknown.append(k)
        else:
            body[name] = v
    if unknown:
        raise WeightsError(f"{len(unknown)} {what}: {sorted(unknown)[:20]}")
    return body


_TV_RE = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(.+)$")
_TV_LAYER = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}


def _torchvision_name(k: str) -> Optional[str]:
    if k.startswith("fc."):
        return "linear." + k[3:]
    if k.startswith("conv1."):
        return "stem.conv1." + k[6:]
    if k.startswith("bn1."):
        return "stem.conv1.norm." + k[4:]
    m = _TV_RE.match(k)
    if not m:
        return None
    stage, block, layer, leaf = m.groups()
    layer = _TV_LAYER.get(layer) or (f"conv{layer[2:]}.norm" if layer.startswith("bn") else layer)
    return f"res{int(stage) + 1}.{block}.{layer}.{leaf}"


def _from_torchvision(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if "conv1.0.weight" in state:
        raise WeightsError(
            "this checkpoint has a deep (3-conv) stem, as timm's ResNet-D variants (resnet50d, ...); "
            "those bodies are not the paper's ResNet and are not supported"
        )
    return _rename_body(state, _torchvision_name, "keys are not torchvision ResNet names")


_C2_NAMES = {"fc1000_w": "linear.weight", "fc1000_b": "linear.bias", "conv1_w": "stem.conv1.weight",
             "res_conv1_bn_s": "stem.conv1.norm.weight", "res_conv1_bn_b": "stem.conv1.norm.bias",
             "conv1_gn_s": "stem.conv1.norm.weight", "conv1_gn_b": "stem.conv1.norm.bias"}
_C2_RE = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|gn_s|gn_b)$")
_C2_LAYER = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_LEAF = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias", "gn_s": "norm.weight", "gn_b": "norm.bias"}


def _caffe2_name(k: str) -> Optional[str]:
    if k in _C2_NAMES:
        return _C2_NAMES[k]
    m = _C2_RE.match(k)
    if not m:
        return None
    stage, block, branch, leaf = m.groups()
    return f"res{stage}.{block}.{_C2_LAYER[branch]}.{_C2_LEAF[leaf]}"


def _from_caffe2(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    dropped = [k for k in state if k.endswith("_momentum")]
    body = _rename_body({k: v for k, v in state.items() if not k.endswith("_momentum")}, _caffe2_name,
                   "blobs are not caffe2 ResNet names")
    for prefix in [_caffe2_name(k)[: -len("weight")] for k in state if k.endswith("bn_s")]:
        # a norm stored as caffe2 AffineChannel (scale and bias only)
        channels = body[prefix + "weight"].shape[0]
        body[prefix + "running_mean"] = torch.zeros(channels)
        # detectron2's FrozenBatchNorm2d loads AffineChannel blobs (no statistics) with running_var = 1,
        # i.e. x * s / sqrt(1 + eps) + b rather than caffe2's exact x * s + b; we do the same so that
        # both engines compute the same features from the same .pkl (relative difference ~5e-6 per norm).
        body[prefix + "running_var"] = torch.ones(channels)
    return body, dropped


_D2_PREFIXES = ("backbone.bottom_up.", "backbone.")


def _from_detectron2(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    prefix = next((p for p in _D2_PREFIXES if any(k.startswith(p + "stem.") for k in state)), None)
    if prefix is None:
        prefix = "" if any(k.startswith("stem.") for k in state) else None
    if prefix is None:
        raise WeightsError("no ResNet body (…stem.conv1.weight) found in this detectron2 checkpoint")
    body, extra = {}, {}
    body_re = re.compile(r"^(stem|res[2-5]|linear)\.")
    for k, v in state.items():
        if k.startswith(prefix) and body_re.match(k[len(prefix):]):
            body[k[len(prefix):]] = v
        else:
            extra[k] = v
    return body, extra


def _caffe2_conventions(body: Mapping[str, torch.Tensor]) -> Conventions:
    w = body.get("res2.0.conv2.weight")
    grouped = w is not None and w.dim() == 4 and w.shape[2] == 3 and w.shape[1] != w.shape[0]
    return FAIR_RESNEXT_CONVENTIONS if grouped else MSRA_CONVENTIONS


@dataclass(frozen=True)
class _Read:
    """What a format's reader makes of a state dict."""

    body: Dict[str, torch.Tensor]
    conventions: Optional[Conventions]
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    architecture: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class WeightFormat:
    """A row of :data:`FORMAT_TABLE`.

    detect: (the state dict's keys, the wrapper's metadata) -> whether a file is of this format; the rows
        answer for disjoint sets of files.
    read: (tensors without BatchNorm counters, metadata) -> :class:`_Read`, the body under our names.
    reads: the other formats whose files this row also reads when asked for by name (``format=``).
    """

    name: str
    detect: Callable[[Set[str], Mapping[str, Any]], bool]
    read: Callable[[Dict[str, torch.Tensor], Mapping[str, Any]], _Read]
    reads: Tuple[str, ...] = ()


def _torchvision_keys(keys: Set[str]) -> bool:
    return "layer1.0.conv1.weight" in keys or "conv1.weight" in keys or "conv1.0.weight" in keys


def _is_timm(meta: Mapping[str, Any]) -> bool:
    return bool(meta.get("arch")) or "state_dict_ema" in meta


def _read_torchvision(state, meta) -> _Read:
    return _Read(_from_torchvision(state), TORCHVISION_CONVENTIONS)


def _read_caffe2(state, meta) -> _Read:
    body, dropped = _from_caffe2(state)
    return _Read(body, _caffe2_conventions(body), dropped=dropped)


def _read_detectron2(state, meta) -> _Read:
    body, extra = _from_detectron2(state)
    conventions = Conventions.from_dict(meta["conventions"]) if isinstance(meta.get("conventions"), Mapping) else None
    return _Read(body, conventions, extra=extra)


def _read_backbone_file(state, meta) -> _Read:
    body, conventions, architecture = read_backbone_file(state, meta)
    return _Read(body, conventions, architecture=architecture)


# Every format: its name (what MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT and ``format=`` take), how a file of it
# is recognised, and its reader.
FORMAT_TABLE: Dict[str, WeightFormat] = {f.name: f for f in (
    WeightFormat("torchvision", lambda keys, meta: _torchvision_keys(keys) and not _is_timm(meta), _read_torchvision,
                 reads=("timm",)),
    WeightFormat("timm", lambda keys, meta: _torchvision_keys(keys) and _is_timm(meta), _read_torchvision,
                 reads=("torchvision",)),
    WeightFormat("caffe2", lambda keys, meta: "conv1_w" in keys or "res_conv1_bn_s" in keys
                 or any(k.startswith("res2_0_branch") for k in keys), _read_caffe2),
    WeightFormat("detectron2", lambda keys, meta: meta.get("format") != BACKBONE_FILE_FORMAT
                 and any(k.endswith("stem.conv1.weight") for k in keys), _read_detectron2),
    WeightFormat(BACKBONE_FILE_FORMAT, lambda keys, meta: meta.get("format") == BACKBONE_FILE_FORMAT,
                 _read_backbone_file, reads=("detectron2",)),
)}
FORMATS = ("auto",) + tuple(FORMAT_TABLE)


def _detect_format(state: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    keys = set(state)
    found = [f.name for f in FORMAT_TABLE.values() if f.detect(keys, meta)]
    if len(found) == 1:
        return found[0]
    sample = sorted(keys)[:8]
    if not found:
        raise WeightsError(
            f"cannot tell the format of this checkpoint from its keys (first: {sample}); "
            f"pass format= one of {FORMATS[1:]}"
        )
    raise WeightsError(f"this checkpoint looks like each of {found} (first keys: {sample}); pass format= one of them")


def parse_weights(obj: Any, *, format: str = "auto", source: str = "") -> Weights:
    """Rename a loaded checkpoint object (dict, possibly wrapped) to our names.

    Args:
        obj: what :func:`load_file` returned, or a state dict.
        format: one of :data:`FORMATS`; "auto" detects it (:data:`FORMAT_TABLE`).
        source: a name for messages.
    """
    if format not in FORMATS:
        raise WeightsError(f"format={format!r} must be one of {FORMATS}")
    state, meta = _unwrap(obj)
    detected = _detect_format(state, meta)
    if format != "auto" and format != detected and format not in FORMAT_TABLE[detected].reads:
        raise WeightsError(f"{source or 'checkpoint'}: asked for format {format!r}, but its keys are {detected} names")
    fmt = detected if format == "auto" else format
    dropped = [k for k in state if k.endswith("num_batches_tracked")]
    state = {k: _to_tensor(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    read = FORMAT_TABLE[fmt].read(state, meta)
    return Weights(body=read.body, format=fmt, conventions=read.conventions, extra=read.extra,
                   dropped=dropped + read.dropped, source=source, architecture=read.architecture)

"""The backbone file of this library's classification pretraining (He et al. 2016, section 3.4): a body's
tensors with the input conventions and the architecture they were trained with, so that a detector config
that disagrees is refused with the keys to set, as for a torchvision or MSRA file.

The file (``OUTPUT_DIR/model_final_backbone.pth`` of ``tools/pretrain_net.py``) is a ``torch.save`` of tensors
and plain containers (``torch.load(weights_only=True)`` reads it)::

    {"format": "resnet_backbones", "format_version": 1, "__author__": "resnet_backbones",
     "model": {"stem.conv1.weight": ..., "res2.0.conv1.norm.running_mean": ..., ...},  # the body's own names
     "conventions": {"stride_in_1x1": False, "input_format": "RGB", "pixel_mean": [...], "pixel_std": [...],
                     "name": "resnet_backbones pretraining"},
     "architecture": {"body": "resnet", "depth": 50, "block": "bottleneck", "num_groups": 1,
                      "width_per_group": 16, "stem_out_channels": 64, "res2_out_channels": 64,
                      "preactivation": False, "shortcuts": True, "norm": "BN"},
     "pretraining": {"config": ..., "dataset": ..., "classes": [...], "iteration": ..., ...},
     "matching_heuristics": False}

The state dict is the body's (``ResNet`` or ``VGG``) without a classifier: a ResNet's ``stem.*`` and
``res2.*``..``res5.*`` (and, pre-activation, ``feature_norms.res5.*``: the final BN-ReLU before the
average pool), a VGG's ``conv1_1.*``..``conv5_3.*``. A VGG body has ``{"body": "vgg", "depth": 16,
"conv1_channels": 64}``. The loader (:func:`check_architecture`) compares the architecture with the body
it loads into before any tensor: a difference names the config key and the value to set.
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import WeightsError
from ..modeling.norm import FrozenBatchNorm2d
from ..modeling.resnet import RESNET_DEPTHS, ResNet
from ..modeling.vgg import VGG
from .conventions import Conventions
from .fit import check_fit

__all__ = ["BACKBONE_FILE_FORMAT", "FORMAT_VERSION", "ARCHITECTURE_KEYS", "PRETRAINED_CONVENTIONS_NAME",
           "body_architecture", "check_architecture", "is_backbone_file", "match_vgg_body_state",
           "save_backbone_file"]

BACKBONE_FILE_FORMAT = "resnet_backbones"
FORMAT_VERSION = 1
PRETRAINED_CONVENTIONS_NAME = "resnet_backbones pretraining"

# architecture field -> the config key that sets it, per body kind (for the messages).
ARCHITECTURE_KEYS: Dict[str, Dict[str, str]] = {
    "resnet": {
        "depth": "MODEL.RESNETS.DEPTH",
        "block": "MODEL.RESNETS.DEPTH",
        "num_groups": "MODEL.RESNETS.NUM_GROUPS",
        "width_per_group": "MODEL.RESNETS.WIDTH_PER_GROUP",
        "stem_out_channels": "MODEL.RESNETS.STEM_OUT_CHANNELS",
        "res2_out_channels": "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "preactivation": "MODEL.RESNET_BACKBONES.PREACTIVATION",
        "shortcuts": "MODEL.RESNET_BACKBONES.SHORTCUTS",
        "norm": "MODEL.RESNETS.NORM",
    },
    "vgg": {
        "depth": "MODEL.RESNET_BACKBONES.VGG_DEPTH",
        "conv1_channels": "MODEL.RESNET_BACKBONES.VGG_CONV1_CHANNELS",
    },
}
_BODY_KEY = "MODEL.BACKBONE.NAME"


def _norm_family(module: Optional[nn.Module]) -> str:
    """"BN" for the batch norms (BN, SyncBN and FrozenBN hold the same tensors and load each other's),
    "GN" for group norm, "" for none, else the class name."""
    if module is None or isinstance(module, nn.Identity):
        return ""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)):
        return "BN"
    if isinstance(module, nn.GroupNorm):
        return "GN"
    return type(module).__name__


def body_architecture(body: nn.Module) -> Dict[str, Any]:
    """What a built body is, read from its modules: the record a backbone file carries and the loader compares.

    ResNet: depth, block kind, ResNeXt groups and width, stem and res2 widths, pre-activation, shortcuts
    (False: a plain network), norm family. VGG: depth and the width of conv1.
    """
    if isinstance(body, VGG):
        return {"body": "vgg", "depth": int(body.depth), "conv1_channels": int(body.conv1_1.out_channels)}
    if not isinstance(body, ResNet):
        raise TypeError(f"expected a ResNet or VGG body, got {type(body).__name__}")
    block_kind = RESNET_DEPTHS[body.depth][0]
    first = body.res2[0]
    groups, width = 1, 64
    if block_kind == "bottleneck":
        groups = int(first.conv2.groups)
        width = int(first.conv2.in_channels) // groups
    return {"body": "resnet", "depth": int(body.depth), "block": block_kind, "num_groups": groups,
            "width_per_group": width, "stem_out_channels": int(body.stem.out_channels),
            "res2_out_channels": int(first.out_channels), "preactivation": bool(body.preactivation),
            "shortcuts": bool(getattr(body, "shortcuts", True)),
            "norm": _norm_family(getattr(body.stem.conv1, "norm", None))}


def check_architecture(recorded: Mapping[str, Any], body: nn.Module, source: str = "") -> None:
    """Refuse to load a backbone file into a body of another architecture, naming each config key and the
    value the file needs (before any tensor is compared, so the message says what to change, not which
    of hundreds of tensors differ)."""
    have = body_architecture(body)
    kind = recorded.get("body")
    what = f"{source or 'this backbone file'} (pretrained {_describe(recorded)})"
    if kind != have["body"]:
        raise WeightsError(f"{what} is a {kind} body, this config builds a {have['body']} body: set {_BODY_KEY} "
                           f"to a {kind} backbone, or pretrain a {have['body']} body")
    keys = ARCHITECTURE_KEYS[kind]
    differ = [(f, recorded[f], have[f]) for f in keys if f in recorded and f in have and recorded[f] != have[f]]
    if not differ:
        return
    fixes: List[str] = []
    for field, want, _ in differ:
        if field == "block":
            continue  # a depth of the other block kind: the depth's fix says it
        if field == "norm":
            fixes.append(f"{keys[field]} {'BN (or SyncBN, FrozenBN)' if want == 'BN' else want or 'an empty string'}")
        else:
            fixes.append(f"{keys[field]} {want}")
    shown = ", ".join(f"{f} {w} (this body: {h})" for f, w, h in differ)
    raise WeightsError(f"{what} does not fit the body this config builds: {shown}. Set {', '.join(fixes)}")


def _describe(arch: Mapping[str, Any]) -> str:
    if arch.get("body") == "vgg":
        return f"VGG-{arch.get('depth')}, conv1 width {arch.get('conv1_channels')}"
    name = "ResNet" if arch.get("shortcuts", True) else "plain"
    extra = []
    if arch.get("num_groups", 1) != 1 or arch.get("width_per_group", 64) != 64:
        extra.append(f"{arch.get('num_groups')}x{arch.get('width_per_group')}d")
    if arch.get("preactivation"):
        extra.append("pre-activation")
    return f"{name}-{arch.get('depth')}" + (f" ({', '.join(extra)})" if extra else "")


def is_backbone_file(obj: Any) -> bool:
    """Whether a loaded checkpoint object is a backbone file of this format."""
    return isinstance(obj, Mapping) and obj.get("format") == BACKBONE_FILE_FORMAT


def save_backbone_file(path: str, body: nn.Module, *, conventions: Conventions,
                       pretraining: Optional[Mapping[str, Any]] = None) -> int:
    """Write ``body``'s state dict (a ResNet or VGG body, no classifier) with its conventions and architecture
    to ``path`` (atomically: a temp file, then a rename). Returns the number of tensors written.

    ``conventions``: the input conventions the body was trained with (INPUT.FORMAT, MODEL.PIXEL_MEAN/STD,
    MODEL.RESNETS.STRIDE_IN_1X1 for bottleneck bodies, else None). ``pretraining``: a record of plain values
    (config, dataset, classes, iterations, results) kept in the file for people, not read by the loader.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    payload = {"format": BACKBONE_FILE_FORMAT, "format_version": FORMAT_VERSION, "__author__": "resnet_backbones",
               "model": state, "conventions": conventions.as_dict(), "architecture": body_architecture(body),
               "pretraining": dict(pretraining or {}), "matching_heuristics": False}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return len(state)


def read_backbone_file(state: Dict[str, torch.Tensor], meta: Mapping[str, Any]
                       ) -> Tuple[Dict[str, torch.Tensor], Optional[Conventions], Dict[str, Any]]:
    """The format table's reader: (body tensors, conventions, architecture) of a backbone file."""
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"a {BACKBONE_FILE_FORMAT} backbone file of format_version {version!r}; this version of "
                           f"resnet_backbones reads version {FORMAT_VERSION}")
    for key in ("conventions", "architecture"):
        if not isinstance(meta.get(key), Mapping):
            raise WeightsError(f"a {BACKBONE_FILE_FORMAT} backbone file without its {key!r} record (a damaged file?)")
    return dict(state), Conventions.from_dict(meta["conventions"]), dict(meta["architecture"])


def match_vgg_body_state(body: VGG, body_state: Mapping[str, torch.Tensor], architecture: Mapping[str, Any],
                         source: str = "") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """A VGG backbone file's tensors for ``body``: the architecture checked, every tensor of the body from the
    file; the file's blocks the body does not build are dropped. Returns (tensors by body names, dropped keys)."""
    check_architecture(architecture, body, source)
    target = body.state_dict()
    src = {k: v for k, v in body_state.items() if k in target}
    dropped = sorted(set(body_state) - set(src))

    def message(fit):
        return (f"{source or 'backbone file'} does not fit this VGG-{body.depth} body: missing {fit.missing[:8]}, "
                f"shapes {[(k, s, t) for k, s, t in fit.mismatched][:8]}")

    check_fit(src, target, message)
    return src, dropped

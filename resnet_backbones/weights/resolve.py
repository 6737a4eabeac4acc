"""``MODEL.WEIGHTS`` for both engines: one pipeline from a name to tensors named as the model names them.

conventions of a named source (before any download) -> fetch -> read safely -> a detector checkpoint
(either engine's layout, converted to the model's) or a backbone source (any ImageNet format, renamed
into the body) -> conventions and fit checked. The torchvision engine calls :func:`load_model_weights`;
the detectron2 engine's checkpointer calls :func:`resolve_model_weights` and hands the result to
detectron2's own loading. The backbone files of this library's pretraining (``tools/pretrain_net.py``,
:mod:`.pretrained`) are one more backbone format: their recorded conventions are checked against the
config here, their architecture against the body in :func:`~resnet_backbones.weights.loader.match_body_state`,
and their res5 reaches the C4 head as any ImageNet source's.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..modeling.vgg import VGG
from .catalog import fetch_source
from .conventions import VGG_CONVENTIONS, known_conventions
from .detector import detector_layout, num_classes_of, to_detectron2, to_torchvision
from .fit import check_fit, shortcut_hint
from .formats import parse_weights
from .loader import match_body_state, match_res5_head_state
from .pretrained import is_backbone_file, match_vgg_body_state
from .vgg import match_vgg_state

__all__ = ["ResolvedWeights", "check_cfg_conventions", "resolve_model_weights", "load_model_weights"]

logger = logging.getLogger(__name__)


@dataclass
class ResolvedWeights:
    """What MODEL.WEIGHTS resolved to.

    kind: "detector" (every tensor of the model), "backbone" (the body, and the FPN if the source has
        it) or "none" (MODEL.WEIGHTS empty: random initialisation).
    state: tensors named as ``model.state_dict()`` names them.
    extra: the other top-level entries of a training checkpoint (optimizer, scheduler, iteration, ...).
    """

    kind: str
    state: Dict[str, torch.Tensor] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    summary: str = ""


def check_cfg_conventions(cfg, conventions) -> None:
    """Refuse a config whose input conventions disagree with its weights' (a ``Conventions`` or None),
    naming the keys and values to set. Used by both engines before loading MODEL.WEIGHTS."""
    c = conventions
    if c is None:
        return
    problems = []
    if cfg.INPUT.FORMAT != c.input_format:
        problems.append(f"INPUT.FORMAT {c.input_format}")
    if any(abs(a - b) > 1e-3 for a, b in zip(cfg.MODEL.PIXEL_MEAN, c.pixel_mean)):
        problems.append(f"MODEL.PIXEL_MEAN {list(c.pixel_mean)}")
    if any(abs(a - b) > 1e-3 for a, b in zip(cfg.MODEL.PIXEL_STD, c.pixel_std)):
        problems.append(f"MODEL.PIXEL_STD {list(c.pixel_std)}")
    if (c.stride_in_1x1 is not None and cfg.MODEL.RESNETS.DEPTH >= 50
            and cfg.MODEL.RESNETS.STRIDE_IN_1X1 != c.stride_in_1x1):
        problems.append(f"MODEL.RESNETS.STRIDE_IN_1X1 {c.stride_in_1x1}")
    if problems:
        raise ConfigError(
            f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS} was trained with {c.name or 'other'} input conventions; "
            "set " + ", ".join(problems)
        )


def _body_prefix(model: nn.Module) -> str:
    backbone = model.backbone
    return "backbone.bottom_up." if hasattr(backbone, "bottom_up") else "backbone."


def _check_fits(state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor], cfg, source: str) -> None:
    key = "roi_heads.box_predictor.cls_score.weight"
    if key in state and key in model_state and state[key].shape[0] != model_state[key].shape[0]:
        raise WeightsError(
            f"{source} is a detector of {state[key].shape[0] - 1} classes but MODEL.ROI_HEADS.NUM_CLASSES="
            f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}: set MODEL.ROI_HEADS.NUM_CLASSES {state[key].shape[0] - 1}, or "
            "train from a backbone checkpoint instead"
        )
    wanted = {k: v for k, v in model_state.items() if not k.endswith("num_batches_tracked")}

    def message(fit):
        bad = [f"{k}: {s} vs {t}" for k, s, t in fit.mismatched]
        return (f"{source} is a detector checkpoint that does not fit this config: {len(fit.missing)} missing "
                f"{fit.missing[:8]}, {len(fit.unexpected)} unexpected {fit.unexpected[:8]}, shapes {bad[:8]}"
                + (shortcut_hint(fit) or " (different depth, FPN/head sizes, MODEL.MASK_ON, or "
                   "ROI_BOX_HEAD.NUM_CONV/NUM_FC?)"))

    check_fit(state, wanted, message, known=model_state)


def resolve_model_weights(model: nn.Module, cfg, *, layout: str, source: Optional[str] = None) -> ResolvedWeights:
    """Resolve ``source`` (default MODEL.WEIGHTS) for ``model``, whose state dict has ``layout``
    ("torchvision" for the torchvision engine, "detectron2" for detectron2's GeneralizedRCNN)."""
    source = cfg.MODEL.WEIGHTS if source is None else source
    if not source:
        return ResolvedWeights("none", summary="MODEL.WEIGHTS is empty: random initialisation")
    # Conventions of a named source are known before downloading it: fail before the download.
    check_cfg_conventions(cfg, known_conventions(source))
    fetched = fetch_source(source)
    obj = fetched.load()
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: expected a state dict (or {{'model': state dict}}), got {type(state).__name__}")
    model_state = model.state_dict()
    found = detector_layout(state)
    if found:
        converted = {"torchvision": to_torchvision, "detectron2": to_detectron2}[layout] if found != layout else None
        if converted is not None:
            det = converted(state, source)
            state, dropped = det.state, det.dropped
        else:
            state = {k: torch.as_tensor(v) for k, v in state.items()}
            dropped = []
        _check_fits(state, model_state, cfg, source)
        extra = {k: v for k, v in obj.items() if k != "model"} if found == layout and "model" in obj else {}
        n = num_classes_of(state)
        summary = (f"{source}: {found} detector checkpoint ({n} classes)"
                   + (f" converted to the {layout} layout" if found != layout else "")
                   + f", {len(state)} tensors" + (f"; dropped on purpose: {dropped}" if dropped else ""))
        return ResolvedWeights("detector", state, extra, dropped, summary)
    fmt = cfg.MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT
    if isinstance(model.backbone, VGG) and is_backbone_file(obj):  # a VGG body of tools/pretrain_net.py
        weights = parse_weights(obj, format=fmt, source=source)
        check_cfg_conventions(cfg, weights.conventions)
        tensors, dropped = match_vgg_body_state(model.backbone, weights.body, weights.architecture, source)
        out = {"backbone." + k: v for k, v in tensors.items()}
        summary = (f"{source}: {len(out)} tensors of a pretrained VGG-{model.backbone.depth} body "
                   f"({weights.format} format, {weights.conventions.name} conventions); the box head keeps its "
                   "initialisation (the pretraining classifier is an average pool and one linear layer, not "
                   f"fc6/fc7); {len(dropped)} dropped on purpose")
        return ResolvedWeights("backbone", out, {}, dropped, summary)
    if isinstance(model.backbone, VGG):  # torchvision's ImageNet VGG: the body and fc6/fc7 as the box head
        if fmt not in ("auto", "torchvision"):
            raise ConfigError(f"MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT={fmt!r}: the VGG body reads torchvision's "
                              "VGG state dicts, or the backbone files of tools/pretrain_net.py; set auto")
        check_cfg_conventions(cfg, VGG_CONVENTIONS)
        box_head = getattr(getattr(model, "roi_heads", None), "box_head", None)
        out, dropped = match_vgg_state(model.backbone, box_head, state, source=source)
        summary = (f"{source}: {len(out)} tensors of torchvision's VGG-{model.backbone.depth} (the body"
                   + (", fc6 and fc7 as the box head" if box_head is not None else "")
                   + f"); dropped on purpose: {dropped}")
        return ResolvedWeights("backbone", out, {}, dropped, summary)
    weights = parse_weights(obj, format=fetched.format if fmt == "auto" else fmt, source=source)
    check_cfg_conventions(cfg, weights.conventions)
    prefix = _body_prefix(model)
    tensors, dropped = match_body_state(model.backbone.bottom_up if prefix.endswith("bottom_up.") else model.backbone,
                                        weights)
    out = {prefix + k: v for k, v in tensors.items()}
    res5 = getattr(getattr(model, "roi_heads", None), "res5", None)  # the C4 head (Res5ROIHeads)
    if res5 is not None:
        head = match_res5_head_state(res5, weights)
        out.update(head)
        dropped = [k for k in dropped if "roi_heads." + k not in head]
    if prefix.endswith("bottom_up."):  # FPN tensors of a detectron2 checkpoint, if it has them
        fpn_keys = {k for k in model_state if k.startswith("backbone.") and not k.startswith(prefix)}
        out.update({k: torch.as_tensor(v) for k, v in weights.extra.items() if k in fpn_keys})
        dropped = dropped + [k for k in weights.extra if k not in fpn_keys]
    summary = (f"{source}: {len(out)} backbone tensors ({weights.format} format, "
               f"{weights.conventions.name if weights.conventions else 'unknown'} conventions); "
               f"{len(dropped)} dropped on purpose")
    return ResolvedWeights("backbone", out, {}, dropped, summary)


def load_model_weights(model: nn.Module, cfg, source: Optional[str] = None) -> str:
    """Load MODEL.WEIGHTS (or ``source``) into a torchvision-engine model.

    Returns:
        "detector", "backbone" or "none" (random init).
    """
    resolved = resolve_model_weights(model, cfg, layout="torchvision", source=source)
    if resolved.kind == "none":
        logger.warning(resolved.summary)
        return "none"
    target = model.state_dict()
    state = {k: v.to(dtype=target[k].dtype) for k, v in resolved.state.items()}
    incompatible = model.load_state_dict(state, strict=False)  # the fit was checked above
    left = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    if resolved.kind == "detector" and (left or incompatible.unexpected_keys):
        raise WeightsError(f"{resolved.summary}: missing {left[:8]}, unexpected {incompatible.unexpected_keys[:8]}")
    logger.info(resolved.summary)
    return resolved.kind

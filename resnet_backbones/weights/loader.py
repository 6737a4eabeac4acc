"""Load a weight source into a ResNet body or a body + FPN, accounting for every key."""
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from ..errors import WeightsError
from ..modeling.fpn import FPN
from ..modeling.resnet import ResNet
from .catalog import fetch_source
from .conventions import Conventions, check_stride_convention
from .fit import check_fit, shortcut_hint
from .formats import Weights, parse_weights
from .pretrained import check_architecture

__all__ = ["LoadReport", "read_weights", "load_backbone_weights", "match_body_state", "match_res5_head_state"]

logger = logging.getLogger(__name__)


def read_weights(source: Union[str, Dict[str, Any]], *, format: str = "auto") -> Weights:
    """Read ``source`` (a path, a named source, or an in-memory state dict) and rename it to our names."""
    if isinstance(source, dict):
        return parse_weights(source, format=format, source="<state dict>")
    fetched = fetch_source(source)
    return parse_weights(fetched.load(), format=fetched.format if format == "auto" else format, source=source)


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did."""

    format: str
    conventions: Optional[Conventions]
    loaded: List[str]
    dropped: List[str] = field(default_factory=list)
    fpn_loaded: bool = False

    def summary(self) -> str:
        conv = self.conventions.name if self.conventions else "unknown"
        return (
            f"loaded {len(self.loaded)} tensors ({self.format} format, {conv} conventions); "
            f"{len(self.dropped)} dropped on purpose" + ("; FPN weights loaded" if self.fpn_loaded else "")
        )


def _split_body(model: nn.Module):
    if isinstance(model, FPN):
        return model.bottom_up, model
    if isinstance(model, ResNet):
        return model, None
    raise TypeError(f"expected a ResNet or an FPN over a ResNet, got {type(model).__name__}")


def match_body_state(body: ResNet, weights: Weights):
    """Check ``weights`` against ``body`` and return (tensors keyed by body names, keys dropped on purpose).

    Raises :class:`WeightsError` for a stride-convention mismatch, a pre-activation body (except from a
    backbone file of this library's pretraining, whose architecture record is checked against the body
    first: :func:`~resnet_backbones.weights.pretrained.check_architecture`), missing or unused body keys,
    or shape mismatches (see :func:`load_backbone_weights`).
    """
    if weights.architecture is not None:  # a backbone file that says what it is (tools/pretrain_net.py)
        check_architecture(weights.architecture, body, weights.source)
    elif getattr(body, "preactivation", False):
        raise WeightsError(
            "pre-activation bodies have a different block layout than every supported ImageNet format; "
            "train them from scratch, pretrain one (tools/pretrain_net.py writes a backbone file that loads "
            "into it), or load a checkpoint of this library's own pre-activation model with model.load_state_dict"
        )
    check_stride_convention(weights.conventions, getattr(body, "stride_in_1x1", None), weights.source)
    target = {k: v for k, v in body.state_dict().items() if not k.endswith("num_batches_tracked")}
    src = dict(weights.body)
    dropped = list(weights.dropped)
    if getattr(body, "preactivation", False):
        # A pre-activation body normalises each feature it emits (ResNet ``feature_norm``); a classifier's
        # body emits res5 only, so a detector's res2..res4 norms have no pretrained tensors: they keep their
        # initialisation (logged), and the file's norm of a feature the body does not emit is dropped.
        for k in [k for k in src if k.startswith("feature_norms.") and k not in target]:
            dropped.append(k)
            del src[k]
        fresh = sorted(k for k in target if k.startswith("feature_norms.") and k not in src)
        if fresh:
            logger.info("%s: %d tensors of the pre-activation feature norms keep their initialisation (the "
                        "source has none for these features): %s", weights.source, len(fresh), fresh)
            target = {k: v for k, v in target.items() if k not in fresh}
    built_stages = set(body.stage_names)
    for k in list(src):
        head = k.split(".", 1)[0]
        if head == "linear" and not any(t.startswith("linear.") for t in target):
            dropped.append(k)
            del src[k]
        elif re.fullmatch(r"res[2-5]", head) and head not in built_stages:
            dropped.append(k)
            del src[k]

    kind = "ResNet" if getattr(body, "shortcuts", True) else "plain"  # He et al. 2016 call them plain-18 ...

    def message(fit):
        missing, unused = fit.missing, fit.unexpected
        if missing or unused:
            return (
                f"{weights.source or 'checkpoint'} does not fit this {kind}-{getattr(body, 'depth', '?')} body: "
                f"{len(missing)} missing {missing[:12]}{' ...' if len(missing) > 12 else ''}; "
                f"{len(unused)} unused {unused[:12]}{' ...' if len(unused) > 12 else ''}. "
                + (shortcut_hint(fit).lstrip() or "Check depth, num_groups/width_per_group and norm against the "
                   "checkpoint.")
            )
        bad = [f"{k}: checkpoint {s} vs model {t}" for k, s, t in fit.mismatched]
        return f"{len(bad)} shapes differ (depth, num_groups, width_per_group?): {bad[:8]}"

    check_fit(src, target, message)
    return src, dropped


def match_res5_head_state(head: nn.Module, weights: Weights, prefix: str = "roi_heads.res5.") -> Dict[str, torch.Tensor]:
    """The source's ``res5.*`` tensors for the C4 detector's per-RoI res5 stage (``Res5ROIHeads.res5`` on
    either engine), keyed ``prefix + block...``: every head tensor accounted for, shapes checked, and the
    stride convention checked against the head itself (its first block's 1x1 conv has stride 2 exactly
    when it was built with ``stride_in_1x1``).
    """
    stride_in_1x1 = head[0].conv1.stride[0] > 1 if hasattr(head[0], "conv1") else None
    check_stride_convention(weights.conventions, stride_in_1x1, weights.source)
    target = {k: v for k, v in head.state_dict().items() if not k.endswith("num_batches_tracked")}
    src = {k[len("res5."):]: v for k, v in weights.body.items() if k.startswith("res5.")}

    def message(fit):
        missing, unused = fit.missing, fit.unexpected
        if missing or unused:
            return (f"{weights.source or 'checkpoint'} does not fit the res5 head (MODEL.ROI_HEADS.NAME Res5ROIHeads): "
                    f"{len(missing)} missing {[prefix + k for k in missing[:8]]}, {len(unused)} unused "
                    f"{['res5.' + k for k in unused[:8]]}."
                    + (shortcut_hint(fit) or " Check depth, num_groups/width_per_group and norm."))
        bad = [f"{prefix}{k}: checkpoint {s} vs model {t}" for k, s, t in fit.mismatched]
        return f"{len(bad)} res5 head shapes differ (depth, num_groups, width_per_group?): {bad[:8]}"

    check_fit(src, target, message)
    return {prefix + k: src[k] for k in target}


def load_backbone_weights(
    model: nn.Module, source: Union[str, Dict[str, Any], Weights], *, format: str = "auto"
) -> LoadReport:
    """Load ImageNet (or detectron2) weights into ``model``'s stages.

    Args:
        model: a :class:`ResNet` or an :class:`FPN` over one.
        source: a file path, a named source (see :mod:`resnet_backbones.weights.catalog`), a state
            dict, or :class:`Weights` already read.
        format: "auto", "torchvision", "timm", "caffe2" or "detectron2".

    Every tensor of the body must come from the source and every body tensor of the source must be
    used, else :class:`WeightsError` lists them. Dropped on purpose (and listed in the report): the
    classifier (``fc.*``/``fc1000_*``) when the body has none, BatchNorm counters, caffe2 momentum
    blobs, the stages a body does not build because its out_features stop earlier, and, for an FPN,
    detectron2 tensors outside the backbone (heads). FPN tensors of a detectron2 checkpoint are loaded
    into the FPN; an ImageNet source leaves the FPN at its initialisation.

    The source's stride convention must match the body (:func:`check_stride_convention`); its pixel
    conventions are reported for the caller (the detector) to check.
    """
    body, fpn = _split_body(model)
    weights = source if isinstance(source, Weights) else read_weights(source, format=format)
    src, dropped = match_body_state(body, weights)
    target = body.state_dict()
    body.load_state_dict({k: v.to(target[k].dtype) for k, v in src.items()}, strict=False)

    fpn_loaded = False
    if fpn is not None and weights.extra:
        fpn_target = {k: v for k, v in fpn.state_dict().items() if not k.startswith("bottom_up.")}
        fpn_src = {k[len("backbone."):]: v for k, v in weights.extra.items()
                   if k.startswith("backbone.") and k[len("backbone."):] in fpn_target}
        if fpn_src:

            def message(fit):
                if fit.missing:
                    return f"the checkpoint has FPN weights but lacks {fit.missing}"
                differ = {k for k, _, _ in fit.mismatched}
                return f"FPN shapes differ for {[k for k in fpn_src if k in differ]}"  # in the checkpoint's order

            check_fit(fpn_src, fpn_target, message)
            fpn.load_state_dict(fpn_src, strict=False)
            fpn_loaded = True
        dropped.extend(k for k in weights.extra if k[len("backbone."):] not in fpn_src)
    elif weights.extra:
        dropped.extend(weights.extra)
    report = LoadReport(weights.format, weights.conventions, sorted(src), dropped, fpn_loaded)
    logger.info("%s: %s", weights.source, report.summary())
    return report

"""Detector checkpoints between detectron2's layout and the torchvision engine's, every tensor accounted for.

detectron2 (``GeneralizedRCNN``, FPN, C4 or DC5)                 torchvision engine (``GeneralizedRCNN``)
-------------------------------------------------------------  ---------------------------------------------
backbone.*                                                      backbone.* (same modules: our FPN or body)
proposal_generator.rpn_head.conv.*                              rpn.head.conv.0.0.*
proposal_generator.rpn_head.objectness_logits.*                 rpn.head.cls_logits.*
proposal_generator.rpn_head.anchor_deltas.*                     rpn.head.bbox_pred.*
roi_heads.box_head.conv{k}.* / conv{k}.norm.*                   roi_heads.box_head.{k-1}.0.* / {k-1}.1.*
roi_heads.box_head.fc{j}.*                                      roi_heads.box_head.{n_conv + 2j - 1}.*
roi_heads.box_predictor.cls_score.*  (C classes, background     roi_heads.box_predictor.cls_score.*
    last)                                                           (background first)
roi_heads.box_predictor.bbox_pred.*  (4C rows)                  roi_heads.box_predictor.bbox_pred.* (4 + 4C
                                                                    rows; the background's 4 are unused)
roi_heads.mask_head.mask_fcn{k}.* / .norm.*                     roi_heads.mask_head.{k-1}.0.* / {k-1}.1.*
roi_heads.mask_head.deconv.*                                    roi_heads.mask_predictor.conv5_mask.*
roi_heads.mask_head.predictor.*  (C channels)                   roi_heads.mask_predictor.mask_fcn_logits.*
                                                                    (background channel 0, unused)
roi_heads.res5.*  (C4: ``Res5ROIHeads``)                        roi_heads.res5.* (same modules: our res5)

The RPN head's channel order needs no change because the torchvision engine's anchor generator orders
anchors as detectron2's (size-major, then aspect ratio). Tensors of older detectron2 checkpoints that
no current model has (``pixel_mean``, ``pixel_std``, ``proposal_generator.anchor_generator.cell_anchors.*``)
are dropped and reported; any other unknown key is an error.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import torch

from ..errors import WeightsError

__all__ = ["DetectorWeights", "detector_layout", "to_torchvision", "to_detectron2", "num_classes_of"]

# The C4 res5 head: our block modules on both engines (detectron2's Res5ROIHeads names them the same).
_RES5 = re.compile(r"^roi_heads\.res5\.\d+\.(conv[123]|shortcut)\.(weight|norm\.(weight|bias|running_mean|running_var|num_batches_tracked))$")
_D2_OBSOLETE = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+)$")


@dataclass
class DetectorWeights:
    """A detector state dict in one layout, with what the conversion dropped on purpose."""

    state: Dict[str, torch.Tensor]
    layout: str  # "detectron2" or "torchvision"
    dropped: List[str] = field(default_factory=list)


def detector_layout(state: Dict[str, object]) -> str:
    """"detectron2", "torchvision", or "" when ``state`` holds no detector heads."""
    if any(k.startswith("proposal_generator.") for k in state):
        return "detectron2"
    if any(k.startswith("rpn.head.") for k in state):
        return "torchvision"
    return ""


def _count(state, pattern: str) -> int:
    r = re.compile(pattern)
    return len({r.match(k).group(1) for k in state if r.match(k)})


def num_classes_of(state: Dict[str, torch.Tensor]) -> int:
    """Foreground classes of a detector state dict of either layout (cls_score rows minus the background)."""
    w = state.get("roi_heads.box_predictor.cls_score.weight")
    if w is None:
        raise WeightsError("the detector checkpoint has no roi_heads.box_predictor.cls_score.weight")
    return int(w.shape[0]) - 1


# Modules that only change name, leaves weight and bias: (detectron2 name, torchvision-engine name).
_RENAMED = (
    ("proposal_generator.rpn_head.conv", "rpn.head.conv.0.0"),
    ("proposal_generator.rpn_head.objectness_logits", "rpn.head.cls_logits"),
    ("proposal_generator.rpn_head.anchor_deltas", "rpn.head.bbox_pred"),
    ("roi_heads.mask_head.deconv", "roi_heads.mask_predictor.conv5_mask"),
    ("roi_heads.mask_head.predictor", "roi_heads.mask_predictor.mask_fcn_logits"),
)
# Keys named the same in both layouts.
_SAME = (re.compile(r"^backbone\..+$"), re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$"),
         _RES5)

_Rules = List[Tuple[re.Pattern, Callable[[re.Match], str]]]


def _common_rules(to_torchvision: bool) -> _Rules:
    """The rules both directions share: ``_SAME`` kept, ``_RENAMED`` read one way or the other."""
    rules: _Rules = [(p, lambda m: m.group(0)) for p in _SAME]
    for d2, tv in _RENAMED:
        src, dst = (d2, tv) if to_torchvision else (tv, d2)
        rules.append((re.compile(rf"^{re.escape(src)}\.(weight|bias)$"), lambda m, dst=dst: f"{dst}.{m.group(1)}"))
    return rules


def _rules_d2_to_tv(n_conv: int) -> _Rules:
    def conv(m):  # detectron2 {head}.{conv|mask_fcn}{k}[.norm].* -> {head}.{k-1}.{0: conv, 1: norm}.*
        return f"{m.group(1)}.{int(m.group(2)) - 1}.{'1.' if m.group(3) else '0.'}{m.group(4)}"

    return _common_rules(True) + [
        (re.compile(r"^(roi_heads\.box_head)\.conv(\d+)\.(norm\.)?(.+)$"), conv),
        (re.compile(r"^(roi_heads\.mask_head)\.mask_fcn(\d+)\.(norm\.)?(.+)$"), conv),
        (re.compile(r"^roi_heads\.box_head\.fc(\d+)\.(weight|bias)$"),
         lambda m: f"roi_heads.box_head.{n_conv + 2 * int(m.group(1)) - 1}.{m.group(2)}"),
    ]


def _rules_tv_to_d2(n_conv: int) -> _Rules:
    def box_module(m):
        i, sub, leaf = int(m.group(1)), m.group(2), m.group(3)
        if i < n_conv:
            return f"roi_heads.box_head.conv{i + 1}.{'norm.' if sub == '1' else ''}{leaf}"
        if sub is not None or (i - n_conv) % 2 != 1:
            raise WeightsError(f"{m.group(0)} is not a conv or FC of the box head")
        return f"roi_heads.box_head.fc{(i - n_conv + 1) // 2}.{leaf}"

    return _common_rules(False) + [
        (re.compile(r"^roi_heads\.box_head\.(\d+)\.(?:(0|1)\.)?(.+)$"), box_module),
        (re.compile(r"^roi_heads\.mask_head\.(\d+)\.(0|1)\.(.+)$"),
         lambda m: f"roi_heads.mask_head.mask_fcn{int(m.group(1)) + 1}.{'norm.' if m.group(2) == '1' else ''}{m.group(3)}"),
    ]


def _rename(state, rules, source: str) -> Dict[str, torch.Tensor]:
    out, unknown = {}, []
    for k, v in state.items():
        for pattern, fn in rules:
            m = pattern.match(k)
            if m:
                out[fn(m)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise WeightsError(f"{source}: {len(unknown)} tensors are not part of a (Mask) R-CNN (FPN, C4, DC5) detector of this "
                           f"layout: {sorted(unknown)[:12]}")
    return out


def to_torchvision(state: Dict[str, torch.Tensor], source: str = "checkpoint") -> DetectorWeights:
    """detectron2 detector state dict -> the torchvision engine's layout (classes moved, background added)."""
    dropped = sorted(k for k in state if _D2_OBSOLETE.match(k))
    state = {k: torch.as_tensor(v) for k, v in state.items() if not _D2_OBSOLETE.match(k)}
    n_conv = _count(state, r"^roi_heads\.box_head\.conv(\d+)\.weight$")
    out = _rename(state, _rules_d2_to_tv(n_conv), source)
    for leaf in ("weight", "bias"):
        k = f"roi_heads.box_predictor.cls_score.{leaf}"
        if k in out:  # detectron2: classes 0..C-1 then background; torchvision: background then classes
            out[k] = torch.cat([out[k][-1:], out[k][:-1]])
        k = f"roi_heads.box_predictor.bbox_pred.{leaf}"
        if k in out:
            c = num_classes_of(state)
            if out[k].shape[0] != 4 * c:
                raise WeightsError(f"{source}: bbox_pred has {out[k].shape[0]} rows for {c} classes; class-agnostic "
                                   "box regression (MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG) is not supported")
            out[k] = torch.cat([torch.zeros_like(out[k][:4]), out[k]])
        k = f"roi_heads.mask_predictor.mask_fcn_logits.{leaf}"
        if k in out:
            c = num_classes_of(state)
            if out[k].shape[0] != c:
                raise WeightsError(f"{source}: the mask predictor has {out[k].shape[0]} channels for {c} classes; "
                                   "class-agnostic masks (MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK) are not supported")
            out[k] = torch.cat([torch.zeros_like(out[k][:1]), out[k]])
    return DetectorWeights(out, "torchvision", dropped)


def to_detectron2(state: Dict[str, torch.Tensor], source: str = "checkpoint") -> DetectorWeights:
    """The torchvision engine's detector state dict -> detectron2's layout.

    The background's box-delta rows and mask channel, which the torchvision layout has but never
    trains or uses, are dropped (listed in ``dropped``).
    """
    state = {k: torch.as_tensor(v) for k, v in state.items()}
    n_conv = _count(state, r"^roi_heads\.box_head\.(\d+)\.0\.weight$")
    if n_conv and any(re.match(rf"^roi_heads\.box_head\.{n_conv}\.", k) for k in state):
        raise WeightsError(f"{source}: unexpected tensors at the box head's flatten position")
    out = _rename(state, _rules_tv_to_d2(n_conv), source)
    dropped = []
    for leaf in ("weight", "bias"):
        k = f"roi_heads.box_predictor.cls_score.{leaf}"
        if k in out:
            out[k] = torch.cat([out[k][1:], out[k][:1]])
        k = f"roi_heads.box_predictor.bbox_pred.{leaf}"
        if k in out:
            out[k] = out[k][4:]
            dropped.append(f"roi_heads.box_predictor.bbox_pred.{leaf}[:4] (background box deltas)")
        k = f"roi_heads.mask_head.predictor.{leaf}"
        if k in out:
            out[k] = out[k][1:]
            dropped.append(f"roi_heads.mask_predictor.mask_fcn_logits.{leaf}[0] (background mask)")
    return DetectorWeights({k: v.contiguous() for k, v in out.items()}, "detectron2", dropped)

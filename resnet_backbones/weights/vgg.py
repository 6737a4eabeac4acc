"""ImageNet VGG-16 weights (torchvision's layout) for the Faster R-CNN VGG-16 detector.

torchvision ``vgg16`` state dict                      detector
----------------------------------------------------  -----------------------------------------------
features.{i}.weight/bias  (the 13 convs, in order)     body ``conv{b}_{k}.weight/bias``
classifier.0.weight/bias  (fc6, 25088 -> 4096)         box head, first FC (7x7x512 RoI features)
classifier.3.weight/bias  (fc7, 4096 -> 4096)          box head, second FC
classifier.6.weight/bias  (fc8, the 1000 classes)      dropped

Every body and box-head tensor must come from the source; anything else is an error. The box head's two
FCs are found by module order, so the same function serves detectron2's ``FastRCNNConvFCHead``
(``fc1``, ``fc2``) and torchvision's (``1``, ``3``).
"""
import re
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

from ..errors import WeightsError
from ..modeling.vgg import VGG, VGG_DEPTHS

__all__ = ["is_torchvision_vgg", "match_vgg_state"]

_KEY = re.compile(r"^(features|classifier)\.(\d+)\.(weight|bias)$")


def is_torchvision_vgg(state: Mapping[str, object]) -> bool:
    """True for a torchvision VGG state dict (``features.{i}.*`` and nothing but ``classifier.{i}.*``)."""
    return bool(state) and all(_KEY.match(k) for k in state) and any(k.startswith("features.") for k in state)


def _linears(box_head: nn.Module) -> List[Tuple[str, nn.Linear]]:
    return [(n, m) for n, m in box_head.named_modules() if isinstance(m, nn.Linear)]


def match_vgg_state(body: VGG, box_head: nn.Module, state: Mapping[str, object], *, source: str = "",
                    body_prefix: str = "backbone.", head_prefix: str = "roi_heads.box_head."
                    ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The tensors of a torchvision VGG state dict, named as the detector names them.

    Returns (tensors keyed ``body_prefix + conv1_1.weight`` ... and ``head_prefix + <fc>.weight``,
    the source keys dropped on purpose). ``box_head`` may be None (a body without the detector).
    """
    source = source or "checkpoint"
    if not is_torchvision_vgg(state):
        raise WeightsError(f"{source} is not a torchvision VGG state dict (features.{{i}}.*, classifier.{{i}}.*): "
                           "the VGG body loads torchvision's ImageNet VGG-16 "
                           "(torchvision://VGG16_Weights.IMAGENET1K_V1) "
                           "or a detector checkpoint of this config")
    tensors = {k: torch.as_tensor(v) for k, v in state.items()}
    conv_ids = sorted({int(_KEY.match(k).group(2)) for k in tensors if k.startswith("features.")})
    body_names = [n for n, _ in body.named_children()]
    out: Dict[str, torch.Tensor] = {}
    expected = sum(len(b) for b in VGG_DEPTHS[body.depth])
    if len(conv_ids) != expected:
        raise WeightsError(f"{source} has {len(conv_ids)} convolutions, VGG-{body.depth} {expected}: "
                           "a VGG of another depth?")
    body_state = body.state_dict()
    for name, i in zip(body_names, conv_ids):
        for leaf in ("weight", "bias"):
            key = f"features.{i}.{leaf}"
            if key not in tensors:
                raise WeightsError(f"{source} lacks {key} (for {body_prefix}{name}.{leaf})")
            if tensors[key].shape != body_state[f"{name}.{leaf}"].shape:
                raise WeightsError(f"{source}: {key} is {tuple(tensors[key].shape)}, {body_prefix}{name}.{leaf} is "
                                   f"{tuple(body_state[name + '.' + leaf].shape)} (a VGG of another depth?)")
            out[f"{body_prefix}{name}.{leaf}"] = tensors[key]
    used = {f"features.{i}.{leaf}" for i in conv_ids[:len(body_names)] for leaf in ("weight", "bias")}
    if box_head is not None:
        fcs = _linears(box_head)
        wanted = [("classifier.0", "fc6"), ("classifier.3", "fc7")]
        if any(isinstance(m, nn.Conv2d) for m in box_head.modules()) or len(fcs) != 2:
            raise WeightsError(f"the box head has {len(fcs)} FC layers (and convs, if any, that no VGG-16 "
                               "tensor initialises): fc6/fc7 of VGG-16 need MODEL.ROI_BOX_HEAD.NUM_CONV 0, NUM_FC 2, "
                               "FC_DIM 4096 and POOLER_RESOLUTION 7")
        for (name, fc), (src, what) in zip(fcs, wanted):
            for leaf in ("weight", "bias"):
                key = f"{src}.{leaf}"
                if key not in tensors:
                    raise WeightsError(f"{source} lacks {key} ({what})")
                if tensors[key].shape != getattr(fc, leaf).shape:
                    raise WeightsError(
                        f"{source}: {key} ({what}) is {tuple(tensors[key].shape)}, the box head's FC {name} is "
                        f"{tuple(getattr(fc, leaf).shape)}: fc6/fc7 need MODEL.ROI_BOX_HEAD.NUM_FC 2, FC_DIM 4096 "
                        "and POOLER_RESOLUTION 7 on 512-channel conv5 features")
                out[f"{head_prefix}{name}.{leaf}"] = tensors[key]
                used.add(key)
    dropped = sorted(set(tensors) - used)
    return out, dropped

"""detectron2 Backbone adapters and registered builders (imported only when detectron2 is importable).

Registered names (prefixed, so they never collide with detectron2's own builders):
- ``build_resnet_backbones_backbone``: the body alone (res2..res5 per MODEL.RESNETS.OUT_FEATURES).
- ``build_resnet_backbones_fpn_backbone``: body + FPN (p2..p6), as detectron2's build_resnet_fpn_backbone.
- ``build_resnet_backbones_vgg_backbone``: VGG-16 to conv5_3 (the Faster R-CNN baseline of He et al. 2016, Table 8).

For LazyConfig models, :func:`resnet_fpn_backbone` builds the same backbone from plain keyword
arguments (``L(resnet_fpn_backbone)(depth=101, ...)`` as ``model.backbone``); for the C4 models,
:func:`resnet_backbone` is the body alone (``model.backbone``) and :func:`resnet_res5_head` the per-RoI
res5 stage (``model.roi_heads.res5``), each loading its share of the same ImageNet weights.
"""
from torch import nn

from detectron2.layers import ShapeSpec as D2ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..builders import build_body_from_cfg, build_fpn_from_cfg, build_res5_head_from_cfg, build_vgg_from_cfg
from ..modeling import (FPN, VGG, BasicBlock, BottleneckBlock, ResNet, build_res5_head, build_resnet,
                        build_resnet_fpn, zero_init_residual)
from ..weights import load_backbone_weights
from ..weights.loader import match_res5_head_state, read_weights

__all__ = ["D2ResNet", "D2FPN", "D2VGG", "build_resnet_backbones_backbone", "build_resnet_backbones_fpn_backbone",
           "build_resnet_backbones_vgg_backbone",
           "plain_res5_head", "register_backbones", "resnet_fpn_backbone", "resnet_backbone", "resnet_res5_head",
           "zero_init_res5_head"]


def _d2_shapes(shapes):
    return {name: D2ShapeSpec(channels=s.channels, stride=s.stride) for name, s in shapes.items()}


class D2ResNet(ResNet, Backbone):
    """Our ResNet as a detectron2 Backbone: same modules and parameter names, d2 ShapeSpecs."""

    def output_shape(self):
        return _d2_shapes(ResNet.output_shape(self))


class D2FPN(FPN, Backbone):
    """Our FPN as a detectron2 Backbone: same modules and parameter names, d2 ShapeSpecs."""

    body_class = D2ResNet  # the bottom-up body, built by build_fpn_from_cfg

    def output_shape(self):
        return _d2_shapes(FPN.output_shape(self))


class D2VGG(VGG, Backbone):
    """Our VGG body as a detectron2 Backbone: same modules and parameter names, d2 ShapeSpecs."""

    def output_shape(self):
        return _d2_shapes(VGG.output_shape(self))


def build_resnet_backbones_backbone(cfg, input_shape: D2ShapeSpec) -> D2ResNet:
    return build_body_from_cfg(cfg, input_shape.channels, body_class=D2ResNet)


def build_resnet_backbones_fpn_backbone(cfg, input_shape: D2ShapeSpec) -> D2FPN:
    return build_fpn_from_cfg(cfg, input_shape.channels, fpn_class=D2FPN)


def build_resnet_backbones_vgg_backbone(cfg, input_shape: D2ShapeSpec) -> D2VGG:
    return build_vgg_from_cfg(cfg, input_shape.channels, body_class=D2VGG)


def resnet_fpn_backbone(*, weights: str = "", weights_format: str = "auto", **kwargs) -> D2FPN:
    """Body + FPN as a detectron2 Backbone, from :func:`~resnet_backbones.modeling.build_resnet_fpn`'s
    keyword arguments (``depth``, ``norm``, ``stride_in_1x1``, ``freeze_at``, ``in_features``,
    ``out_channels``, ``fpn_norm``, ``top_block``, ...): the LazyConfig counterpart of
    ``build_resnet_backbones_fpn_backbone``, with the same modules and parameter names.

    ``weights``: ImageNet (or backbone) weights loaded into the stages when the model is built, a path
    or a named source (``torchvision://ResNet152_Weights.IMAGENET1K_V2``,
    ``detectron2://ImageNetPretrained/MSRA/R-50.pkl``); "" leaves the initialisation. Loading them
    here, not through ``train.init_checkpoint``, lets every format go through our loader (detectron2's
    checkpointer cannot map torchvision names) and checks the stride convention against the body.
    """
    model = build_resnet_fpn(fpn_class=D2FPN, body_class=D2ResNet, **kwargs)
    if weights:
        load_backbone_weights(model, weights, format=weights_format)
    return model


def resnet_backbone(*, weights: str = "", weights_format: str = "auto", **kwargs) -> D2ResNet:
    """The body alone as a detectron2 Backbone, from :func:`~resnet_backbones.modeling.build_resnet`'s
    keyword arguments (``depth``, ``norm``, ``stride_in_1x1``, ``freeze_at``, ``out_features``, ...): the
    LazyConfig counterpart of ``build_resnet_backbones_backbone`` (the C4 models' ``model.backbone``,
    ``out_features=["res4"]``). ``weights`` as in :func:`resnet_fpn_backbone`; the stages the body does not
    build (res5 of a C4 body) are left to :func:`resnet_res5_head`."""
    model = build_resnet(body_class=D2ResNet, **kwargs)
    if weights:
        load_backbone_weights(model, weights, format=weights_format)
    return model


def resnet_res5_head(*, weights: str = "", weights_format: str = "auto", **kwargs) -> nn.Sequential:
    """The C4 detector's per-RoI res5 stage for detectron2's ``Res5ROIHeads(res5=...)``, from
    :func:`~resnet_backbones.modeling.build_res5_head`'s keyword arguments (``depth``, ``norm``,
    ``stride_in_1x1``, ``num_groups``, ``width_per_group``, ...): the same blocks and parameter names as
    detectron2's ``ResNet.make_stage`` res5 (``roi_heads.res5.0.conv1.weight``). ``weights``: the
    ImageNet source whose ``res5.*`` tensors it loads, every head tensor accounted for and the stride
    convention checked against the head (:func:`~resnet_backbones.weights.loader.match_res5_head_state`);
    "" leaves the initialisation."""
    head = build_res5_head(**kwargs)
    if weights:
        state = match_res5_head_state(head, read_weights(weights, format=weights_format), prefix="")
        target = head.state_dict()
        head.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()}, strict=False)
    return head


def zero_init_res5_head(cfg, model: nn.Module) -> int:
    """MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL for the res5 head of a yaml C4 model: detectron2's
    ``Res5ROIHeads`` builds that head itself (detectron2's own blocks), so the key, which the body's
    builder applies to the body, is applied to the head here, after ``build_model`` (the engine's
    Trainer does; call it yourself after detectron2's ``build_model`` in your own project). Returns the
    number of blocks changed (0 without the key or a res5 head)."""
    from detectron2.modeling.backbone.resnet import BasicBlock as D2BasicBlock
    from detectron2.modeling.backbone.resnet import BottleneckBlock as D2BottleneckBlock

    res5 = getattr(getattr(model, "roi_heads", None), "res5", None)
    if not cfg.MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL or res5 is None:
        return 0
    return zero_init_residual(res5, (D2BasicBlock, D2BottleneckBlock, BasicBlock, BottleneckBlock))


def plain_res5_head(cfg, model: nn.Module) -> bool:
    """MODEL.RESNET_BACKBONES.SHORTCUTS False for the res5 head of a yaml C4 model: detectron2's
    ``Res5ROIHeads`` builds that head itself from detectron2's residual blocks, so here, after
    ``build_model`` (the engine's Trainer does; call it yourself after detectron2's ``build_model`` in
    your own project), it is replaced by the core's plain res5 stage
    (:func:`~resnet_backbones.builders.build_res5_head_from_cfg`, the one the torchvision engine builds:
    the same parameter names and output channels, less the shortcuts), on the old head's device.
    Returns whether it replaced one (False with shortcuts, or without a res5 head)."""
    roi_heads = getattr(model, "roi_heads", None)
    old = getattr(roi_heads, "res5", None)
    if cfg.MODEL.RESNET_BACKBONES.SHORTCUTS or old is None:
        return False
    device = next(old.parameters()).device
    roi_heads.res5 = build_res5_head_from_cfg(cfg).to(device)
    return True


def register_backbones() -> None:
    """Add our builders to detectron2's BACKBONE_REGISTRY (idempotent)."""
    for fn in (build_resnet_backbones_backbone, build_resnet_backbones_fpn_backbone,
               build_resnet_backbones_vgg_backbone):
        if fn.__name__ not in BACKBONE_REGISTRY:
            BACKBONE_REGISTRY.register(fn)

"""detectron2 Backbone adapters and registered builders (imported only when detectron2 is importable).

Registered names (prefixed, so they never collide with detectron2's own builders):
- ``build_resnet_backbones_backbone``: the body alone (res2..res5 per MODEL.RESNETS.OUT_FEATURES).
- ``build_resnet_backbones_fpn_backbone``: body + FPN (p2..p6), as detectron2's build_resnet_fpn_backbone.

For LazyConfig models, :func:`resnet_fpn_backbone` builds the same backbone from plain keyword
arguments (``L(resnet_fpn_backbone)(depth=101, ...)`` as ``model.backbone``).
"""
from detectron2.layers import ShapeSpec as D2ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..builders import build_body_from_cfg, build_fpn_from_cfg
from ..modeling import FPN, ResNet, build_resnet_fpn
from ..weights import load_backbone_weights

__all__ = ["D2ResNet", "D2FPN", "build_resnet_backbones_backbone", "build_resnet_backbones_fpn_backbone",
           "register_backbones", "resnet_fpn_backbone"]


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


def build_resnet_backbones_backbone(cfg, input_shape: D2ShapeSpec) -> D2ResNet:
    return build_body_from_cfg(cfg, input_shape.channels, body_class=D2ResNet)


def build_resnet_backbones_fpn_backbone(cfg, input_shape: D2ShapeSpec) -> D2FPN:
    return build_fpn_from_cfg(cfg, input_shape.channels, fpn_class=D2FPN)


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


def register_backbones() -> None:
    """Add our builders to detectron2's BACKBONE_REGISTRY (idempotent)."""
    for fn in (build_resnet_backbones_backbone, build_resnet_backbones_fpn_backbone):
        if fn.__name__ not in BACKBONE_REGISTRY:
            BACKBONE_REGISTRY.register(fn)

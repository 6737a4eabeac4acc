"""ResNet-18/34/50/101/152 (ResNeXt, pre-activation) backbones with FPN for detection."""
from .modeling import (  # noqa: F401
    FPN,
    FrozenBatchNorm2d,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNet,
    ShapeSpec,
    build_resnet,
    build_resnet_fpn,
)

__version__ = "0.1.0"

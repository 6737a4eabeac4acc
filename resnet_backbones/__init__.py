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

from .config import add_resnet_backbones_config, get_cfg  # noqa: F401
from .predictor import Detections, Predictor  # noqa: F401
from .d2 import register_if_available as _register

__version__ = "0.1.0"

# detectron2 users: importing the package registers our builders in BACKBONE_REGISTRY.
_register()

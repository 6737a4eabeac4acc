"""ResNet-18/34/50/101/152 (ResNeXt, pre-activation) backbones with FPN for detection.

Where things are (one job per module; its first docstring line says which):

- the body, its blocks, the FPN, the res5 head, the backbone contract: modeling/resnet.py, blocks.py, fpn.py,
  res5_head.py, shapes.py
- reading a weight file, fitting it to a model, converting detector checkpoints: weights/formats.py, fit.py,
  loader.py, detector.py
- config keys and their translation into builders: config.py, builders.py
- optimizer, LR schedule, clipping; the AMP / CPU-bf16 decision: solver.py; precision.py
- the divergence guard; the last checkpoint; hints after a bad run: divergence.py; checkpoints.py; hints.py
- every error type: errors.py
- batched inference; TorchScript / ONNX export and its wrapper: predictor.py; export.py
- datasets by name; json checks; reading an image: data/catalog.py; data/validate.py; data/images.py
- the torchvision engine: model, trainer, its hooks, evaluation: tv/model.py, tv/train.py, tv/hooks.py,
  tv/evaluate.py
- each piece that computes detectron2's function on torchvision's: tv/parity/
- the detectron2 engine: backbones, trainer, hooks, datasets, AMP: d2/backbone.py, d2/train.py, d2/hooks.py,
  d2/datasets.py, d2/amp.py
"""
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

"""The torchvision engine: torchvision's (Mask) R-CNN on our backbone, training loop, COCO evaluation."""
from .distributed import launch
from ..weights.resolve import load_model_weights
from .model import build_model
from .supported import check_supported
from .train import Trainer, evaluate, setup_logging

"""The torchvision engine: torchvision's (Mask) R-CNN on our backbone, training loop, COCO evaluation."""
from .distributed import launch
from .model import build_model, check_supported, load_model_weights
from .train import Trainer, evaluate, setup_logging

"""Classification pretraining of the detectors' bodies (He et al. 2016, section 3.4): ``tools/pretrain_net.py``.

The body a detector config builds (ResNet-18..152, ResNeXt, pre-activation, plain, VGG-16), a global average
pool and a linear classifier, trained on an ImageFolder with the paper's augmentation by the torchvision
engine's trainer; its product, OUTPUT_DIR/model_final_backbone.pth, is the body's state dict with its input
conventions and architecture (:mod:`resnet_backbones.weights.pretrained`), which MODEL.WEIGHTS of that
detector config loads on either engine.
"""
from .data import SYNTHETIC_SET, ClassificationBatchSampler, ClassificationFolder, epoch_schedule, scan_image_folder
from .model import ImageClassifier, build_classifier
from .train import BACKBONE_FILE, PretrainTrainer, evaluate_classifier, main, prepare_data

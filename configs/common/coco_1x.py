"""detectron2's COCO data, SGD, 1x schedule (90k iterations at 16 images) and train settings, read
from the installed detectron2's model-zoo configs (common/data/coco.py, optim.py, coco_schedule.py,
train.py), for the 1x LazyConfigs of this package."""
from resnet_backbones.model_zoo import detectron2_config

dataloader = detectron2_config("common/data/coco.py").dataloader
optimizer = detectron2_config("common/optim.py").SGD
lr_multiplier = detectron2_config("common/coco_schedule.py").lr_multiplier_1x
train = detectron2_config("common/train.py").train
train.init_checkpoint = ""  # ImageNet weights: model.backbone.weights, loaded when the model is built

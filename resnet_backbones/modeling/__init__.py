"""Plain-PyTorch backbones (never imports detectron2)."""
from .blocks import (
    BasicBlock,
    BasicStem,
    BlockBase,
    BottleneckBlock,
    Conv2d,
    PreActBasicBlock,
    PreActBottleneckBlock,
    zero_init_residual,
)
from .fpn import FPN, TOP_BLOCKS, LastLevelMaxPool, LastLevelP6P7, build_resnet_fpn
from .norm import NORM_NAMES, FrozenBatchNorm2d, get_norm
from .optimize import (
    compile_for_inference,
    fold_frozen_batchnorm,
    optimize_for_inference,
    set_activation_checkpointing,
    set_frozen_bn_folding,
    to_channels_last,
)
from .res5_head import build_res5_head
from .resnet import RESNET_DEPTHS, ResNet, build_resnet, make_stage
from .shapes import DeclaredOutputs, ShapeSpec
from .vgg import VGG, VGG_DEPTHS, build_vgg

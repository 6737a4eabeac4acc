"""The pretraining classifier: the detector's body, a global average pool and a linear classifier (He et al.
2016, Table 1: "average pool, 1000-d fc, softmax"), built from the config by the same core builders as the
detectors' bodies, so that the body's state dict is the detector body's, key for key."""
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..builders import VGG_BACKBONES, _apply_speed_options, resnet_kwargs_from_cfg
from ..errors import ConfigError
from ..modeling import build_resnet, build_vgg

__all__ = ["ImageClassifier", "build_classifier", "check_pretrain_cfg", "validate_pretrain_cfg"]

logger = logging.getLogger("resnet_backbones")


class ImageClassifier(nn.Module):
    """``backbone`` (a ResNet or VGG body) -> its ``feature`` map -> global average pool -> ``linear``.

    Args:
        backbone: a body whose ``forward`` returns a dict holding ``feature`` (res5, or conv5 of VGG).
        feature: the body output the classifier reads.
        num_classes: classifier outputs.
        pixel_mean, pixel_std: per channel, in the order of the input images (INPUT.FORMAT); inputs are
            ``(image - mean) / std`` (the detector's normalisation, so the body sees what it will see there).

    ``forward(images, targets=None)``: ``images`` an (N, 3, H, W) tensor of 0-255 values (uint8 or float, on
    any device: moved to the model's). In training with ``targets`` (a list of ``{"label": int64 tensor}``)
    returns ``{"loss_cls": cross-entropy}``, the loss dict the torchvision engine's trainer steps on, and
    keeps the batch's top-1 error (%) in ``batch_top1_error``; otherwise the (N, num_classes) logits.
    """

    def __init__(self, backbone: nn.Module, feature: str, num_classes: int, *, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.feature = feature
        channels = backbone.output_shape()[feature].channels
        self.linear = nn.Linear(channels, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # as the ResNet body's own ImageNet head
        nn.init.zeros_(self.linear.bias)
        # Not in the state dict: the conventions are the config's (and are written into the backbone file).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @property
    def num_classes(self) -> int:
        return self.linear.out_features

    def forward(self, images: torch.Tensor, targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        x = (images.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        logits = self.linear(torch.flatten(F.adaptive_avg_pool2d(self.backbone(x)[self.feature], 1), 1))
        if self.training and targets is not None:
            labels = torch.stack([t["label"] for t in targets]).to(logits.device)
            # The batch's top-1 error (in %), kept for the trainer's log: the training error of the paper's
            # Figure 4, measured on the augmented crops as they are trained on.
            self.batch_top1_error = (logits.detach().argmax(1) != labels).double().mean() * 100.0
            return {"loss_cls": F.cross_entropy(logits.float(), labels)}
        return logits


def check_pretrain_cfg(cfg) -> None:
    """Refuse body settings that mean fine-tuning, not training from scratch, naming the fix."""
    problems = []
    if cfg.MODEL.BACKBONE.FREEZE_AT != 0:
        problems.append(f"MODEL.BACKBONE.FREEZE_AT={cfg.MODEL.BACKBONE.FREEZE_AT} (frozen blocks would keep their "
                        "random initialisation: set 0)")
    if cfg.MODEL.BACKBONE.NAME not in VGG_BACKBONES and cfg.MODEL.RESNETS.NORM == "FrozenBN":
        problems.append("MODEL.RESNETS.NORM=FrozenBN (no statistics or scales to learn: set BN, SyncBN or GN; the "
                        "detector may freeze them again when it loads the file)")
    if problems:
        raise ConfigError("classification pretraining trains the whole body: " + "; ".join(problems))


def build_classifier(cfg, num_classes: int) -> ImageClassifier:
    """The config's body, whole (the classifier reads its last stage whatever the detector's
    MODEL.RESNETS.OUT_FEATURES: res5 is the C4 detector's ROI head, still part of the body pretrained), with
    the classifier on top. ResNet: :func:`~resnet_backbones.modeling.build_resnet` with the detector's
    keyword arguments (:func:`~resnet_backbones.builders.resnet_kwargs_from_cfg`: depth, widths, groups,
    stride position, norm, pre-activation, shortcuts, zero-init, res5 dilation); VGG:
    :func:`~resnet_backbones.modeling.build_vgg` from MODEL.RESNET_BACKBONES.VGG_*, to conv5_3."""
    check_pretrain_cfg(cfg)
    if cfg.MODEL.BACKBONE.NAME in VGG_BACKBONES:
        r = cfg.MODEL.RESNET_BACKBONES
        body, feature = build_vgg(depth=r.VGG_DEPTH, out_features=["conv5"], freeze_at=0,
                                  conv1_channels=r.VGG_CONV1_CHANNELS), "conv5"
    else:
        body, feature = build_resnet(out_features=["res5"], **resnet_kwargs_from_cfg(cfg)), "res5"
        _apply_speed_options(cfg, body)
    return ImageClassifier(body, feature, num_classes, pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
                           pixel_std=list(cfg.MODEL.PIXEL_STD))


def validate_pretrain_cfg(cfg) -> None:
    """Every config error :func:`build_classifier` would raise, found by building it without memory (on the
    meta device): what the command line checks before it starts any process."""
    with torch.device("meta"):
        build_classifier(cfg, 2)

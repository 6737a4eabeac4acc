"""Input conventions of weight sources, and the check that a body agrees with them.

The one place for this logic: the loader, both engines and the tools call these functions; the check of
a config against them (``check_cfg_conventions``) lives in :mod:`resnet_backbones.weights.resolve`,
which reads ``MODEL.WEIGHTS`` from the config.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import WeightsError

__all__ = [
    "Conventions",
    "TORCHVISION_CONVENTIONS",
    "MSRA_CONVENTIONS",
    "FAIR_RESNEXT_CONVENTIONS",
    "VGG_CONVENTIONS",
    "known_conventions",
    "check_stride_convention",
]


@dataclass(frozen=True)
class Conventions:
    """Input conventions implied by a weight source (README "Weight formats and conventions").

    stride_in_1x1: where bottleneck blocks put their stride (None: the source does not say).
    input_format: "RGB" or "BGR" channel order of the 0-255 input.
    pixel_mean, pixel_std: per channel, in ``input_format`` order.
    """

    stride_in_1x1: Optional[bool]
    input_format: str
    pixel_mean: Tuple[float, float, float]
    pixel_std: Tuple[float, float, float]
    name: str = ""

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["pixel_mean"], d["pixel_std"] = list(self.pixel_mean), list(self.pixel_std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Conventions":
        return cls(
            stride_in_1x1=d["stride_in_1x1"],
            input_format=str(d["input_format"]),
            pixel_mean=tuple(float(v) for v in d["pixel_mean"]),
            pixel_std=tuple(float(v) for v in d["pixel_std"]),
            name=str(d.get("name", "")),
        )


TORCHVISION_CONVENTIONS = Conventions(False, "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "torchvision")
MSRA_CONVENTIONS = Conventions(True, "BGR", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0), "MSRA caffe2")
# FAIR's caffe2 ResNeXt ImageNet models (e.g. detectron2's X-101-32x8d.pkl): stride in the 3x3,
# BGR input scaled by the ImageNet std (detectron2's X_101_32x8d_FPN configs).
FAIR_RESNEXT_CONVENTIONS = Conventions(False, "BGR", (103.53, 116.28, 123.675), (57.375, 57.12, 58.395), "FAIR caffe2 ResNeXt")


# torchvision's ImageNet VGG models: RGB, ImageNet mean/std, and no bottleneck to put a stride in.
VGG_CONVENTIONS = Conventions(None, "RGB", TORCHVISION_CONVENTIONS.pixel_mean, TORCHVISION_CONVENTIONS.pixel_std,
                              "torchvision VGG")


def known_conventions(source: str) -> Optional[Conventions]:
    """The conventions a named ImageNet source implies, known without fetching it (None if unknown)."""
    if source.startswith("torchvision://VGG"):
        return VGG_CONVENTIONS
    if source.startswith(("torchvision://", "timm://")):
        return TORCHVISION_CONVENTIONS
    if source.startswith("detectron2://ImageNetPretrained/MSRA/"):
        return MSRA_CONVENTIONS
    if source.startswith("detectron2://ImageNetPretrained/FAIR/X-"):
        return FAIR_RESNEXT_CONVENTIONS
    return None


def check_stride_convention(conventions: Optional[Conventions], stride_in_1x1: Optional[bool], source: str = "") -> None:
    """Refuse weights trained with the stride in the other conv of the bottleneck.

    The stride position is architecture, not a setting the loader can change after the body is built,
    so a mismatch is an error naming the fix instead of a silent drop of several AP points.
    """
    if conventions is None or conventions.stride_in_1x1 is None or stride_in_1x1 is None:
        return
    if conventions.stride_in_1x1 != stride_in_1x1:
        want = conventions.stride_in_1x1
        raise WeightsError(
            f"{source or 'these weights'} ({conventions.name or 'source'} conventions) put the bottleneck stride in "
            f"the {'1x1' if want else '3x3'} conv: build the body with stride_in_1x1={want} "
            f"(MODEL.RESNETS.STRIDE_IN_1X1={want})"
        )

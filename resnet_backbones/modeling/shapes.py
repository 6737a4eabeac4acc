"""The backbone contract every body and the FPN declare: output names, their channels and strides
(``output_shape()``), and the padding their inputs need (``size_divisibility``, ``padding_constraints``),
with detectron2's ``Backbone`` names and meanings (detectron2 modeling/backbone/backbone.py)."""
from typing import Dict, List, NamedTuple

__all__ = ["DeclaredOutputs", "ShapeSpec"]


class ShapeSpec(NamedTuple):
    """Channels and stride (relative to the input image) of one feature map."""

    channels: int
    stride: int


class DeclaredOutputs:
    """What a backbone declares about its outputs, from ``self._out_features``, ``self._shapes`` and
    ``self._size_divisibility``: ``out_features``, ``output_shape()``, ``size_divisibility`` and
    ``padding_constraints``. Mixed into :class:`~resnet_backbones.modeling.resnet.ResNet`,
    :class:`~resnet_backbones.modeling.vgg.VGG` and :class:`~resnet_backbones.modeling.fpn.FPN`; the
    detectron2 adapters (:mod:`resnet_backbones.d2.backbone`) inherit it ahead of detectron2's
    ``Backbone``, whose defaults it replaces."""

    _out_features: List[str]
    _shapes: Dict[str, ShapeSpec]
    # 0: any input size works, outputs are ceil(H / stride). The FPN needs a multiple of its coarsest
    # input stride for detectron2's exact behaviour.
    _size_divisibility: int = 0

    @property
    def out_features(self) -> List[str]:
        return list(self._out_features)

    @property
    def size_divisibility(self) -> int:
        """Pad inputs to a multiple of this (0: no padding needed)."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """detectron2's ``Backbone.padding_constraints``, which ``ImageList.from_tensors`` reads: the key
        ``size_divisibility`` (there it overrides the ``size_divisibility`` argument)."""
        return {"size_divisibility": self._size_divisibility}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{name: ShapeSpec(channels, stride)} for each entry of ``out_features``."""
        return dict(self._shapes)

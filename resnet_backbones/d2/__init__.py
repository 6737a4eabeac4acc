"""detectron2 integration. Importing this package never fails without detectron2.

With detectron2 importable, ``import resnet_backbones`` registers
``build_resnet_backbones_backbone`` and ``build_resnet_backbones_fpn_backbone`` in
``detectron2.modeling.BACKBONE_REGISTRY`` (see :mod:`resnet_backbones.d2.backbone`).
"""
import importlib.util

__all__ = ["detectron2_available", "register_if_available"]


def detectron2_available() -> bool:
    """True when detectron2 (with its compiled ops) can be imported."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    try:
        import detectron2.modeling  # noqa: F401
    except Exception:  # a source tree without its C++ extension, or a broken install
        return False
    return True


def register_if_available() -> bool:
    """Register our backbones in detectron2's registry when detectron2 is importable; harmless otherwise."""
    if not detectron2_available():
        return False
    from .backbone import register_backbones

    register_backbones()
    return True

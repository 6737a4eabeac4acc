"""Datasets by name: COCO under detectron2's names and layout, the synthetic default, and your own."""
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .synthetic import ensure_synthetic

__all__ = ["DatasetError", "DatasetSpec", "register_coco_instances", "get_dataset", "registered_datasets"]


class DatasetError(RuntimeError):
    """A dataset that is not registered, not on disk, or holds an unreadable file."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    json_file: str
    image_root: str


# name -> function(cfg) returning a DatasetSpec (lazy: paths resolve when the dataset is used)
_REGISTRY: Dict[str, Callable[..., DatasetSpec]] = {}


def register_coco_instances(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO instances json + image folder under ``name`` (like detectron2's function)."""
    _REGISTRY[name] = lambda cfg=None: DatasetSpec(name, json_file, image_root)


def registered_datasets() -> List[str]:
    return sorted(_REGISTRY)


def _datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


_COCO = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}


def _coco(name: str, images: str, ann: str):
    def spec(cfg=None) -> DatasetSpec:
        root = _datasets_root()
        return DatasetSpec(name, os.path.join(root, ann), os.path.join(root, images))

    return spec


for _name, (_images, _ann) in _COCO.items():
    _REGISTRY[_name] = _coco(_name, _images, _ann)


def _synthetic(split: str):
    def spec(cfg=None) -> DatasetSpec:
        configured = cfg.MODEL.RESNET_BACKBONES.SYNTHETIC_ROOT if cfg is not None else ""
        root = ensure_synthetic(configured)
        return DatasetSpec(f"synthetic_shapes_{split}", os.path.join(root, "annotations", f"instances_{split}.json"),
                           os.path.join(root, split))

    return spec


for _split in ("train", "val"):
    _REGISTRY[f"synthetic_shapes_{_split}"] = _synthetic(_split)


def _variant(variant: str, split: str):
    def spec(cfg=None) -> DatasetSpec:
        from .variants import VARIANTS, generate_variant, variants_root

        root = generate_variant(os.path.join(variants_root(), variant), VARIANTS[variant])
        return DatasetSpec(f"shapes_{variant}_{split}", os.path.join(root, "annotations", f"instances_{split}.json"),
                           os.path.join(root, split))

    return spec


def _register_variants() -> None:
    from .variants import VARIANTS

    for variant in VARIANTS:
        for split in ("train", "val"):
            _REGISTRY[f"shapes_{variant}_{split}"] = _variant(variant, split)


_register_variants()


def get_dataset(name: str, cfg=None) -> DatasetSpec:
    """Resolve a registered name to its files, generating the synthetic data on first use, and check
    them (:func:`resnet_backbones.data.validate.validate_coco`: every listed image exists, every
    annotation has a known category and image and a finite box; both engines come through here
    before their first iteration).

    Raises:
        DatasetError: unknown name, or files missing (never a silent switch to other data);
            DatasetValidationError: the json or its files fail the checks (one message for all).
    """
    if name not in _REGISTRY:
        raise DatasetError(
            f"dataset {name!r} is not registered; known: {', '.join(registered_datasets())}. "
            "Register your own with resnet_backbones.data.register_coco_instances(name, json, image_root)"
        )
    spec = _REGISTRY[name](cfg)
    missing: Optional[str] = None
    if not os.path.isfile(spec.json_file):
        missing = spec.json_file
    elif not os.path.isdir(spec.image_root):
        missing = spec.image_root
    if missing:
        hint = (
            f"put COCO 2017 under {os.path.abspath(_datasets_root())}/coco/ (train2017/, val2017/, annotations/) "
            "or set $DETECTRON2_DATASETS to the folder that holds coco/"
            if name in _COCO else "check the paths given to register_coco_instances"
        )
        raise DatasetError(f"dataset {name!r}: {os.path.abspath(missing)} does not exist; {hint}")
    from .validate import validate_coco  # imports this module

    validate_coco(spec.json_file, spec.image_root, name)
    return spec

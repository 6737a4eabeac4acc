"""Datasets by name: COCO under detectron2's names and layout, the synthetic default, and your own.

Your own COCO-format data needs no Python: name it in the config, ``MODEL.RESNET_BACKBONES.DATASETS:
[[NAME, JSON_FILE, IMAGE_ROOT], ...]``, or on the command line, ``--dataset NAME JSON_FILE IMAGE_ROOT``
(which adds to that key), and ``DATASETS.TRAIN`` / ``DATASETS.TEST`` can name it. Because the names
travel inside the config, every process of a ``--num-gpus`` or torchrun launch knows them, on both
engines. From Python, :func:`register_coco_instances` (detectron2's function of the same name) does the
same for one process.
"""
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import ConfigError, DatasetError
from .synthetic import ensure_synthetic
from .validate import check_images, validate_coco

__all__ = ["DatasetSpec", "check_dataset", "check_dataset_files", "resolve_dataset", "register_coco_instances",
           "get_dataset", "registered_datasets", "config_datasets", "normalize_config_datasets", "check_num_classes"]

DATASETS_KEY = "MODEL.RESNET_BACKBONES.DATASETS"


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


def config_datasets(cfg) -> Dict[str, DatasetSpec]:
    """The datasets a config names in MODEL.RESNET_BACKBONES.DATASETS (``{}`` for None or a config
    without the key, e.g. detectron2's own)."""
    node = getattr(getattr(getattr(cfg, "MODEL", None), "RESNET_BACKBONES", None), "DATASETS", None) or []
    return {name: DatasetSpec(name, json_file, image_root) for name, json_file, image_root in node}


def registered_datasets(cfg=None) -> List[str]:
    """Every name :func:`get_dataset` resolves: the built-in ones, :func:`register_coco_instances`'s,
    and those ``cfg`` names."""
    return sorted(set(_REGISTRY) | set(config_datasets(cfg)))


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

# The names this package defines (not register_coco_instances'), which a config may not redefine.
_BUILTIN: Dict[str, str] = {**{n: "COCO 2017 under $DETECTRON2_DATASETS" for n in _COCO},
                            **{n: "the embedded synthetic dataset" for n in _REGISTRY if n not in _COCO}}


def normalize_config_datasets(entries: Sequence[Sequence[str]]) -> List[List[str]]:
    """MODEL.RESNET_BACKBONES.DATASETS checked (three strings each, a name given once, none of the
    built-in names) with its paths made absolute (relative ones are relative to the working directory).

    Raises:
        ConfigError: naming the entry and the fix.
    """
    out: Dict[str, List[str]] = {}
    for entry in entries:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(isinstance(v, str) and v for v in entry):
            raise ConfigError(f"{DATASETS_KEY}: each entry is [NAME, JSON_FILE, IMAGE_ROOT] (three non-empty "
                              f"strings), got {entry!r}; on the command line: --dataset NAME JSON_FILE IMAGE_ROOT")
        name, json_file, image_root = entry
        if name in _BUILTIN:
            raise ConfigError(f"{DATASETS_KEY}: {name!r} is a built-in dataset name ({_BUILTIN[name]}); "
                              "give your dataset another name (e.g. my_train)")
        paths = [os.path.abspath(os.path.expanduser(json_file)), os.path.abspath(os.path.expanduser(image_root))]
        if name in out and out[name][1:] != paths:
            raise ConfigError(f"{DATASETS_KEY}: {name!r} is given twice with different files "
                              f"({out[name][1]} and {paths[0]}); give each dataset its own name")
        out[name] = [name] + paths
    return list(out.values())


def check_num_classes(cfg, name: str, spec: DatasetSpec, num_categories: int) -> None:
    """MODEL.ROI_HEADS.NUM_CLASSES must be the json's category count (detectron2 maps the categories,
    sorted by id, to 0..K-1): a mismatch would train a head of the wrong size or fail deep in a loss.

    Raises:
        ConfigError: naming both numbers and the fix.
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if num_classes != num_categories:
        raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but dataset {name!r} ({spec.json_file}) "
                          f"has {num_categories} categories: set MODEL.ROI_HEADS.NUM_CLASSES {num_categories} "
                          "(in the yaml, or as KEY VALUE after the command)")


def resolve_dataset(name: str, cfg=None) -> DatasetSpec:
    """A name (``cfg``'s MODEL.RESNET_BACKBONES.DATASETS first, then the registered ones) as its files,
    unchecked (synthetic data is generated on first use): :func:`get_dataset` is the checked way.

    Raises:
        DatasetError: the name is unknown.
    """
    own = config_datasets(cfg)
    if name not in own and name not in _REGISTRY:
        raise DatasetError(
            f"dataset {name!r} is not registered; known: {', '.join(registered_datasets(cfg))}. "
            f"Name your own COCO-format data with --dataset {name} JSON_FILE IMAGE_ROOT on the command line, "
            f"or in the yaml with {DATASETS_KEY} [[\"{name}\", JSON_FILE, IMAGE_ROOT]] "
            "(from Python: resnet_backbones.data.register_coco_instances(name, json, image_root))"
        )
    return own[name] if name in own else _REGISTRY[name](cfg)


def _check_files(name: str, spec: DatasetSpec) -> None:
    missing: Optional[str] = None
    if not os.path.isfile(spec.json_file):
        missing = spec.json_file
    elif not os.path.isdir(spec.image_root):
        missing = spec.image_root
    if missing:
        hint = (
            f"put COCO 2017 under {os.path.abspath(_datasets_root())}/coco/ (train2017/, val2017/, annotations/) "
            "or set $DETECTRON2_DATASETS to the folder that holds coco/"
            if name in _COCO else f"check the paths given for it ({DATASETS_KEY}, --dataset or register_coco_instances)"
        )
        raise DatasetError(f"dataset {name!r}: {os.path.abspath(missing)} does not exist; {hint}")


def check_dataset_files(names: Sequence[str], cfg=None) -> None:
    """Each named COCO or own dataset's json file and image folder exist (the generated ones are made on first
    use and skipped). What ``train_net`` checks before it starts several processes, so that a missing dataset
    is one error in the launching process rather than a traceback from each process it started.

    Raises:
        DatasetError: an unknown name, or a missing file (the message names it and the fix).
    """
    own = config_datasets(cfg)
    for name in names:
        spec = resolve_dataset(name, cfg)
        if name in own or name in _COCO:
            _check_files(name, spec)


def get_dataset(name: str, cfg=None) -> DatasetSpec:
    """Resolve a name (``cfg``'s MODEL.RESNET_BACKBONES.DATASETS first, then the registered ones) to its
    files, generating the synthetic data on first use, and check them
    (:func:`resnet_backbones.data.validate.validate_coco`: every listed image exists, every
    annotation has a known category and image and a finite box; both engines come through here
    before their first iteration). With a ``cfg``, MODEL.ROI_HEADS.NUM_CLASSES must also equal the
    json's category count (:func:`check_num_classes`).

    Raises:
        DatasetError: unknown name, or files missing (never a silent switch to other data);
            DatasetValidationError: the json or its files fail the checks (one message for all);
            ConfigError: NUM_CLASSES differs from the json's category count.
    """
    spec = resolve_dataset(name, cfg)
    _check_files(name, spec)
    report = validate_coco(spec.json_file, spec.image_root, name)
    if cfg is not None:
        check_num_classes(cfg, name, spec, report.num_categories)
    return spec


def check_dataset(name: str, *, cfg=None, workers: int = 0, progress: bool = True) -> List[str]:
    """``tools/check_dataset.py``: the load-time checks of a registered dataset (raising
    :class:`~resnet_backbones.errors.DatasetValidationError` as a run would), then every image decoded
    (:func:`~resnet_backbones.data.validate.check_images`); returns the images that fail to decode or
    differ in size from the json."""
    spec = get_dataset(name, cfg)
    return check_images(spec.json_file, spec.image_root, workers=workers, progress=progress)

"""Our datasets in detectron2's catalogs and loaders: their registration in every process, and the mapper
that names an unreadable image file (or skips it)."""
from typing import Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..data import config_datasets, get_dataset, read_image, registered_datasets
from ..divergence import LossGuard
from ..errors import DatasetError, UnreadableImageError

__all__ = ["CountSkipped", "ReadCheckedMapper", "register_dataset_names", "register_datasets"]


def register_dataset_names(names: Iterable[str], cfg=None) -> None:
    """Make our dataset names (COCO under $DETECTRON2_DATASETS, the synthetic shapes and their variants,
    those of ``register_coco_instances`` and of ``cfg``'s MODEL.RESNET_BACKBONES.DATASETS) known to
    DatasetCatalog/MetadataCatalog (synthetic data is generated here). Our names are checked first
    (:func:`resnet_backbones.data.get_dataset`: the files, and MODEL.ROI_HEADS.NUM_CLASSES against the
    json), so a missing dataset is our error naming the path and the fix; names we do not know are left
    to detectron2 (registered by the user). Called in every process of a launch, so a config's own
    datasets are registered wherever the config goes."""
    own, known = config_datasets(cfg), set(registered_datasets(cfg))
    for name in names:
        if name not in known:
            continue
        spec = get_dataset(name, cfg)
        if name in DatasetCatalog.list():
            if name not in own or MetadataCatalog.get(name).get("json_file", None) == spec.json_file:
                continue  # detectron2's builtin COCO names, or registered before: the same files
            DatasetCatalog.remove(name)  # the same name for other files (another config in this process)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda s=spec: load_coco_json(s.json_file, s.image_root, s.name))
        MetadataCatalog.get(name).set(json_file=spec.json_file, image_root=spec.image_root, evaluator_type="coco")


def register_datasets(cfg) -> None:
    """:func:`register_dataset_names` for DATASETS.TRAIN and DATASETS.TEST."""
    register_dataset_names(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), cfg)


class ReadCheckedMapper:
    """detectron2's DatasetMapper whose failure on an image file that does not decode becomes our
    :class:`UnreadableImageError` naming the file (the torchvision engine's message, from the same
    :func:`resnet_backbones.data.read_image`); other failures pass unchanged, and nothing is read twice
    unless the mapper fails.

    With ``skip`` (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES, training only) it returns None, which
    detectron2's ``MapDataset`` documents as "skip": it maps another, random image instead. That image
    is the next successful call in the same worker, so its dict carries ``"unreadable"`` (the files
    skipped for it), which :class:`CountSkipped` hands to the guard on the main process.
    """

    def __init__(self, mapper, *, skip: bool = False):
        self.mapper = mapper
        self.skip = skip
        self._pending = []

    def __call__(self, dataset_dict):
        try:
            out = self.mapper(dataset_dict)
        except Exception:
            path = dataset_dict["file_name"]
            try:
                read_image(path)
            except UnreadableImageError as bad:
                if not self.skip:
                    raise bad from None
                self._pending.append(path)
                return None
            except DatasetError as missing:
                raise missing from None
            raise
        if self._pending:
            out["unreadable"], self._pending = self._pending, []
        return out


class CountSkipped:
    """The training loader, passing each batch's skipped files (``"unreadable"``) to the guard."""

    def __init__(self, loader, guard: LossGuard):
        self.loader, self.guard = loader, guard

    def __iter__(self):
        for batch in self.loader:
            self.guard.skip_unreadable(p for d in batch for p in d.pop("unreadable", ()))
            yield batch

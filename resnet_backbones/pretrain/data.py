"""The classification data of pretraining: an ImageFolder's two splits, checked before training, with the
augmentation of He et al. 2016, section 3.4, and a deterministic distributed batch stream.

Training (section 3.4): "The image is resized with its shorter side randomly sampled in [256, 480] for scale
augmentation. A 224x224 crop is randomly sampled from an image or its horizontal flip, with the per-pixel
mean subtracted. The standard color augmentation in [21] is used." The mean subtraction and the division
by the std happen in the model (:class:`~resnet_backbones.pretrain.model.ImageClassifier`), with the
config's MODEL.PIXEL_MEAN / PIXEL_STD in INPUT.FORMAT order, as the detector does: the loader hands over
uint8 images in that channel order. Evaluation: the shorter side resized to TEST_SIZE, then the centre crop
or the ten crops of section 3.4 ("In testing, for comparison studies we adopt the standard 10-crop testing").
"""
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..data.images import read_image
from ..errors import ConfigError, DatasetError, DatasetValidationError, UnreadableImageError

__all__ = ["SYNTHETIC_SET", "ClassificationBatchSampler", "ClassificationFolder", "ImageFolderSplits",
           "augment_for_training", "check_image_files", "collate", "epoch_schedule", "image_folder_root",
           "lighting_offset", "resize_shorter_side", "scan_image_folder", "ten_crops", "evaluation_crops"]

logger = logging.getLogger("resnet_backbones")

SYNTHETIC_SET = "synthetic_classes"  # MODEL.RESNET_BACKBONES.PRETRAIN.DATASET of the embedded set
DATASET_KEY = "MODEL.RESNET_BACKBONES.PRETRAIN.DATASET"
SHOWN = 5  # offenders named in a message (the count is complete)

# AlexNet's colour augmentation (Krizhevsky et al. 2012, section 4.1): PCA of ImageNet's RGB pixel values
# (0-1 scale); the eigenvalues and eigenvectors published with fb.resnet.torch, the reproduction of He et
# al. 2016 (its datasets/imagenet.lua). Columns of _EIGVEC are the eigenvectors, in R, G, B order.
_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]])


def image_folder_root(dataset: str) -> str:
    """The folder of MODEL.RESNET_BACKBONES.PRETRAIN.DATASET: the embedded set (generated on first use) by
    its name, else the path itself, which must hold ``train/`` and ``val/``."""
    if not dataset:
        raise ConfigError(f"no classification data: give --data DIR (a folder with train/<class>/* and "
                          f"val/<class>/*, torchvision's ImageFolder layout) or set {DATASET_KEY} (a folder, or "
                          f"{SYNTHETIC_SET!r} for the embedded set)")
    if dataset == SYNTHETIC_SET:
        from ..data.synthetic_classes import ensure_classification_set

        return ensure_classification_set()
    missing = [split for split in ("train", "val") if not os.path.isdir(os.path.join(dataset, split))]
    if missing:
        raise DatasetError(f"{DATASET_KEY}={dataset!r} has no {' and no '.join(s + '/' for s in missing)} folder: "
                           f"a classification folder holds train/<class>/<images> and val/<class>/<images> "
                           "(torchvision.datasets.ImageFolder's layout, as ImageNet's); check the path")
    return dataset


@dataclass
class ImageFolderSplits:
    """Both splits of an ImageFolder root: the class names (train/'s folders, sorted: torchvision's order)
    and the (path, class index) samples of each split, val/ indexed by train/'s classes."""

    root: str
    classes: List[str]
    train: List[Tuple[str, int]]
    val: List[Tuple[str, int]]


def scan_image_folder(root: str) -> ImageFolderSplits:
    """List both splits with ``torchvision.datasets.ImageFolder`` (its image extensions and class order);
    val/ may lack classes of train/ but may not have others."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        train = ImageFolder(os.path.join(root, "train"), loader=lambda p: p)
    except (FileNotFoundError, RuntimeError) as e:  # no class folder, or a class folder without images
        raise DatasetError(f"{os.path.join(root, 'train')}: {e}") from None
    val_dir = os.path.join(root, "val")
    val_classes = sorted(e.name for e in os.scandir(val_dir) if e.is_dir())
    unknown = [c for c in val_classes if c not in train.class_to_idx]
    if unknown:
        raise DatasetError(f"{val_dir} has class folders that {os.path.join(root, 'train')} lacks: {unknown[:SHOWN]}"
                           f"{' ...' if len(unknown) > SHOWN else ''}; the classifier knows the training classes only")
    val = make_dataset(val_dir, {c: train.class_to_idx[c] for c in val_classes}, extensions=IMG_EXTENSIONS,
                       allow_empty=True)
    if not val:
        raise DatasetError(f"{val_dir} holds no images ({', '.join(IMG_EXTENSIONS)}) in class folders")
    return ImageFolderSplits(root, list(train.classes), list(train.samples), list(val))


def _open_header(path: str) -> None:
    with Image.open(path) as im:
        im.size  # noqa: B018  (the header is parsed by open)


def _decode(path: str) -> None:
    read_image(path)


def check_image_files(paths: Sequence[str], mode: str = "header", threads: int = 8) -> List[Tuple[str, str]]:
    """The files among ``paths`` that are not readable images, as (path, reason): ``mode`` "header" opens
    each and parses its header, "decode" decodes it whole, "none" checks nothing."""
    checks: Dict[str, Optional[Callable[[str], None]]] = {"header": _open_header, "decode": _decode, "none": None}
    if mode not in checks:
        raise ConfigError(f"MODEL.RESNET_BACKBONES.PRETRAIN.CHECK_IMAGES={mode!r}: one of {sorted(checks)}")
    check = checks[mode]
    if check is None:
        return []

    def one(path: str) -> Optional[Tuple[str, str]]:
        try:
            check(path)
        except Exception as e:  # noqa: BLE001  (any failure to read is the finding)
            cause = e.__cause__ or e
            return path, f"{type(cause).__name__}: {cause}"
        return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [bad for bad in pool.map(one, paths) if bad is not None]


def unreadable_images_error(bad: Sequence[Tuple[str, str]], root: str, mode: str) -> DatasetValidationError:
    """The one error for the unreadable images found before training."""
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:SHOWN])
    return DatasetValidationError(
        f"{len(bad)} image file(s) under {root} cannot be read (MODEL.RESNET_BACKBONES.PRETRAIN.CHECK_IMAGES "
        f"{mode}): {shown}{'; ...' if len(bad) > SHOWN else ''}. Replace or remove them, or leave them out of "
        "training and evaluation: MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True")


# -- transforms -------------------------------------------------------------------------------------------
def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """``image`` resized (bilinear, antialiased as PIL does) so that its shorter side is ``size``, the
    longer in proportion (torchvision's ``Resize(int)``)."""
    w, h = image.size
    if min(w, h) == size:
        return image
    if w <= h:
        nw, nh = size, max(1, int(round(size * h / w)))
    else:
        nw, nh = max(1, int(round(size * w / h))), size
    return image.resize((nw, nh), Image.BILINEAR)


def lighting_offset(rng: np.random.Generator, std: float) -> np.ndarray:
    """AlexNet's PCA colour augmentation: one RGB offset (0-255 scale) added to every pixel of an image,
    ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, std)`` per component."""
    alpha = rng.normal(0.0, std, size=3)
    return (_EIGVEC @ (alpha * _EIGVAL)) * 255.0


def augment_for_training(image: Image.Image, rng: np.random.Generator, *, crop: int, scale_range: Sequence[int],
                         flip: bool, lighting_std: float) -> np.ndarray:
    """He et al. 2016, section 3.4: the shorter side resized to an integer drawn from ``scale_range``, a
    random ``crop`` x ``crop`` crop, a horizontal flip with probability 1/2 (``flip``), AlexNet's colour
    augmentation. Returns (crop, crop, 3) uint8 RGB; every draw from ``rng``."""
    lo, hi = scale_range
    image = resize_shorter_side(image, int(rng.integers(lo, hi + 1)))
    w, h = image.size
    x0, y0 = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
    array = np.asarray(image.crop((x0, y0, x0 + crop, y0 + crop)))
    if flip and rng.random() < 0.5:
        array = array[:, ::-1]
    if lighting_std > 0:
        array = np.clip(np.rint(array + lighting_offset(rng, lighting_std)), 0, 255)
    return np.ascontiguousarray(array, dtype=np.uint8)


def ten_crops(image: Image.Image, crop: int) -> List[Image.Image]:
    """The four corner crops and the centre crop, then the same of the horizontally flipped image
    (torchvision's ``ten_crop``; He et al. 2016, section 3.4 "the standard 10-crop testing")."""
    from torchvision.transforms.functional import ten_crop

    return list(ten_crop(image, crop))


def evaluation_crops(image: Image.Image, *, crop: int, test_size: int, ten_crop: bool) -> List[np.ndarray]:
    """The crops evaluated for one image: shorter side ``test_size``, then the centre crop or the ten crops;
    each (crop, crop, 3) uint8 RGB."""
    image = resize_shorter_side(image, test_size)
    if ten_crop:
        return [np.asarray(c) for c in ten_crops(image, crop)]
    w, h = image.size
    x0, y0 = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return [np.asarray(image.crop((x0, y0, x0 + crop, y0 + crop)))]


def _to_tensor(array: np.ndarray, input_format: str) -> torch.Tensor:
    if input_format == "BGR":
        array = array[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ClassificationFolder(torch.utils.data.Dataset):
    """(path, class) samples read as detectron2's ``read_image`` reads them and transformed for training
    (item ``(index, seed)``: every random draw from ``seed``) or evaluation (item ``index``).

    Returns ``(image, target)``: ``image`` a uint8 tensor in INPUT.FORMAT channel order, (3, crop, crop) for
    training, (crops, 3, crop, crop) for evaluation; ``target`` ``{"label": int64 tensor}``, and with
    ``skip_unreadable`` an image that does not decode gives ``{"unreadable": [path]}`` instead of an error.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], *, train: bool, input_format: str, crop: int,
                 scale_range: Sequence[int] = (256, 480), flip: bool = True, lighting_std: float = 0.0,
                 test_size: int = 256, ten_crop: bool = False, skip_unreadable: bool = False):
        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT={input_format!r}: classification pretraining reads RGB or BGR")
        lo, hi = scale_range
        if train and not crop <= lo <= hi:
            raise ConfigError(f"MODEL.RESNET_BACKBONES.PRETRAIN.SCALE_RANGE={list(scale_range)} and CROP_SIZE={crop}: "
                              "need CROP_SIZE <= lo <= hi (the crop is taken inside the resized image)")
        if not train and test_size < crop:
            raise ConfigError(f"MODEL.RESNET_BACKBONES.PRETRAIN.TEST_SIZE={test_size} is below CROP_SIZE={crop}")
        self.samples = list(samples)
        self.train, self.input_format, self.crop = train, input_format, crop
        self.scale_range, self.flip, self.lighting_std = (lo, hi), flip, lighting_std
        self.test_size, self.ten_crop, self.skip_unreadable = test_size, ten_crop, skip_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.samples[index]
        target: Dict[str, object] = {"label": torch.tensor(label, dtype=torch.int64)}
        try:
            image = Image.fromarray(read_image(path))
        except UnreadableImageError:
            if not self.skip_unreadable:
                raise
            target["unreadable"] = [path]
            return None, target
        if self.train:
            rng = np.random.default_rng(seed)
            array = augment_for_training(image, rng, crop=self.crop, scale_range=self.scale_range, flip=self.flip,
                                         lighting_std=self.lighting_std)
            return _to_tensor(array, self.input_format), target
        crops = evaluation_crops(image, crop=self.crop, test_size=self.test_size, ten_crop=self.ten_crop)
        return torch.stack([_to_tensor(c, self.input_format) for c in crops]), target


def collate(batch):
    """(images stacked, targets as a list); samples of unreadable images (skipped) keep only their target's
    ``unreadable`` entry, in the first target, for the trainer to log."""
    unreadable = [p for image, t in batch if image is None for p in t["unreadable"]]
    kept = [(image, t) for image, t in batch if image is not None]
    if not kept:
        raise DatasetError(f"every image of a batch is unreadable: {unreadable[:SHOWN]}")
    images = torch.stack([image for image, _ in kept])
    targets = [dict(t) for _, t in kept]
    if unreadable:
        targets[0]["unreadable"] = unreadable
    return images, targets


# -- the batch stream -------------------------------------------------------------------------------------
def _item_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the image at ``position`` of epoch ``epoch``'s global order: the same in
    every process count (a global position, not a per-process one)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class ClassificationBatchSampler(torch.utils.data.Sampler):
    """An endless, deterministic stream of batches of ``(index, seed)`` for one process.

    Epoch e is ``torch.utils.data.DistributedSampler(shuffle=True, seed=SEED)`` at ``set_epoch(e)``: one
    permutation shared by the processes, process r taking every world_size-th index from r (padded to a
    multiple of world_size by repeating its start, as DistributedSampler does). So the global batch of
    iteration i (all processes together) is the same block of the permutation whatever the number of
    processes (when the world size divides the image count), and each image's augmentation seed depends
    on its global position only: N processes of b images see what one process of N x b sees.
    ``start_iter`` skips the batches before it without reading anything, so ``--resume`` is exact.
    """

    def __init__(self, num_images: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0):
        if num_images < 1:
            raise DatasetError("the training split has no images")
        self.num_images, self.batch_size = num_images, batch_size
        self.seed, self.rank, self.world_size, self.start_iter = seed, rank, world_size, start_iter

    def _epoch(self, epoch: int) -> List[int]:
        sampler = torch.utils.data.DistributedSampler(range(self.num_images), num_replicas=self.world_size,
                                                      rank=self.rank, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        per_epoch = math.ceil(self.num_images / self.world_size)  # len(DistributedSampler) without drop_last
        position = self.start_iter * self.batch_size  # in this process's stream
        epoch, offset = divmod(position, per_epoch)
        order, batch = self._epoch(epoch), []
        while True:
            if offset == per_epoch:
                epoch, offset, order = epoch + 1, 0, self._epoch(epoch + 1)
            batch.append((order[offset], _item_seed(self.seed, epoch, offset * self.world_size + self.rank)))
            offset += 1
            if len(batch) == self.batch_size:
                yield batch
                batch = []


def epoch_schedule(epochs: float, step_epochs: Sequence[float], num_images: int, batch_size: int
                   ) -> Tuple[int, Tuple[int, ...], int]:
    """(SOLVER.MAX_ITER, SOLVER.STEPS, iterations per epoch) of a schedule in epochs: an epoch is
    ceil(images / batch) iterations (ImageNet-1k's 1,281,167 images at 256: 5005, so 90 epochs with
    steps at 30 and 60 are 450450 iterations, steps 150150 and 300300)."""
    per_epoch = math.ceil(num_images / batch_size)
    return int(round(epochs * per_epoch)), tuple(int(round(e * per_epoch)) for e in step_epochs), per_epoch

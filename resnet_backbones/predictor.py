"""Batched inference with a trained detector: image files, arrays or tensors in, per-image detections out.

detectron2's ``DefaultPredictor`` takes one BGR array and is, in its authors' words, "only for simple
demo". :class:`Predictor` is built from the same config and weights, takes many inputs of any kind, runs
them in batches of ``batch_size`` with a progress bar, and returns boxes, scores, class indices, class
names and masks in the input image's pixels. It runs the torchvision engine's model (the one both
engines' checkpoints load into), with the config's inference keys (OPTIMIZE_FOR_INFERENCE,
INFERENCE_AMP) applied as in evaluation, or an exported TorchScript or ONNX file of it
(:meth:`Predictor.from_export`) behind the same interface.

A batch pads its images to a common size, as detectron2's batched inference does: detections near the
bottom and right edges of a smaller image can then differ slightly from batch size 1 (the convolutions
see the padding's features there). Batch size 1, the default, is what evaluation runs.
"""
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from .errors import ConfigError, DatasetError

__all__ = ["Detections", "Predictor", "dataset_class_names"]

logger = logging.getLogger("resnet_backbones")

Input = Union[str, os.PathLike, np.ndarray, torch.Tensor]


@dataclass
class Detections:
    """One image's detections, best first, in the input image's pixel coordinates.

    Attributes:
        boxes: (K, 4) float, XYXY.
        scores: (K,) float.
        classes: (K,) int64, 0-based class index (the model's label minus 1, detectron2's convention).
        class_names: K names, ``class_names[i]`` of ``classes[i]``.
        masks: (K, H, W) bool masks pasted into the image (Mask R-CNN), else None.
        image_size: (H, W) of the input image.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    class_names: List[str]
    masks: Optional[torch.Tensor]
    image_size: tuple

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> "Detections":
        """The detections whose score is at least ``threshold``."""
        keep = self.scores >= threshold
        idx = torch.where(keep)[0].tolist()
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep],
                          [self.class_names[i] for i in idx], None if self.masks is None else self.masks[keep],
                          self.image_size)


def dataset_class_names(cfg) -> List[str]:
    """The category names of DATASETS.TRAIN's json in the model's class order (sorted by category id, as
    both engines map them), read from its ``categories`` only (no image need be there); the class
    numbers "1".."NUM_CLASSES" where no training set is named or its json cannot be read (a warning
    says why)."""
    from .data import resolve_dataset

    if len(cfg.DATASETS.TRAIN):
        json_file = None
        try:
            json_file = resolve_dataset(cfg.DATASETS.TRAIN[0], cfg).json_file
            with open(json_file) as f:
                categories = json.load(f)["categories"]
            return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
        except DatasetError as e:
            logger.warning("class names as numbers: %s", str(e).splitlines()[0])
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("class names as numbers: %s has no readable categories (%s)",
                           json_file or cfg.DATASETS.TRAIN[0], e)
    return [str(i) for i in range(1, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)]


class Predictor:
    """A trained detector ready for inference.

    Args:
        cfg: a loaded config (:func:`resnet_backbones.config.load_config`) whose MODEL.WEIGHTS is a
            trained detector checkpoint of either engine (detectron2's layout is converted on load).
        class_names: the names of classes 1..NUM_CLASSES; default :func:`dataset_class_names`.
        batch_size: images per forward pass.

    Inputs (one, or a sequence): an image file path (read as the engines read training images: EXIF
    orientation applied); an (H, W, 3) uint8 array in ``array_format`` order (RGB by default, as PIL and
    :func:`resnet_backbones.data.read_image` give; pass "BGR" for OpenCV's); a (3, H, W) tensor of 0-255
    values in RGB order. The model's INPUT.FORMAT is applied after that.
    """

    def __init__(self, cfg, *, class_names: Optional[Sequence[str]] = None, batch_size: int = 1,
                 runner: Optional[torch.nn.Module] = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: use 1 or more")
        self.cfg = cfg
        self.batch_size = batch_size
        self.runner = runner if runner is not None else self._eager_runner(cfg)
        self.class_names = list(class_names) if class_names is not None else dataset_class_names(cfg)
        if len(self.class_names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ConfigError(f"{len(self.class_names)} class names for MODEL.ROI_HEADS.NUM_CLASSES="
                              f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}: give one name per class")

    @staticmethod
    def _eager_runner(cfg) -> torch.nn.Module:
        from .inference import inference_runner
        from .tv.model import build_model, resolve_device
        from .weights.resolve import load_model_weights

        device = resolve_device(cfg)
        model = build_model(cfg).to(device).eval()
        if load_model_weights(model, cfg) != "detector":
            raise ConfigError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} is not a trained detector checkpoint: pass "
                              "one (e.g. OUTPUT_DIR/model_final.pth of a training run)")
        return inference_runner(cfg, model, device)

    @classmethod
    def from_export(cls, export_dir: str, **kwargs) -> "Predictor":
        """From a folder written by ``tools/export_model.py`` (TorchScript or ONNX,
        :class:`~resnet_backbones.export.ExportedDetector`), with the class names recorded at export."""
        from .export import ExportedDetector

        exported = ExportedDetector(export_dir)
        kwargs.setdefault("class_names", exported.class_names)
        return cls(exported.cfg, runner=exported, **kwargs)

    @classmethod
    def from_config(cls, config: str, weights: str, opts: Sequence[str] = (), *, datasets: Sequence = (),
                    **kwargs) -> "Predictor":
        """From a config file (or shipped config name), a weights file, KEY VALUE overrides and the
        ``--dataset`` entries of your own data ([NAME, JSON_FILE, IMAGE_ROOT], for its class names)."""
        from .config import load_config

        cfg = load_config(config, ["MODEL.WEIGHTS", weights, *opts], use_detectron2=False, datasets=datasets)
        return cls(cfg, **kwargs)

    def _tensor(self, item: Input, array_format: str) -> torch.Tensor:
        """``item`` as a (3, H, W) uint8 tensor in the model's INPUT.FORMAT channel order."""
        from .data import read_image

        if isinstance(item, (str, os.PathLike)):
            image = torch.from_numpy(read_image(os.fspath(item))).permute(2, 0, 1)
        elif isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                raise ValueError(f"an image array must be (H, W, 3) uint8, got {item.shape} {item.dtype}: convert "
                                 "it to 8 bits per channel first")
            image = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1)
            if array_format == "BGR":
                image = image.flip(0)
        elif torch.is_tensor(item):
            if item.dim() != 3 or item.shape[0] != 3:
                raise ValueError(f"an image tensor must be (3, H, W) in RGB order, got {tuple(item.shape)}")
            image = item.cpu()
        else:
            raise TypeError(f"cannot predict on a {type(item).__name__}: pass a path, an array or a tensor")
        if image.dtype != torch.uint8:
            image = image.round().clamp(0, 255).to(torch.uint8)
        return (image.flip(0) if self.cfg.INPUT.FORMAT == "BGR" else image).contiguous()

    def _detections(self, out: dict, size: tuple) -> Detections:
        classes = out["labels"].cpu() - 1
        masks = out["masks"][:, 0].cpu() if "masks" in out else None
        return Detections(out["boxes"].float().cpu(), out["scores"].float().cpu(), classes,
                          [self.class_names[int(c)] for c in classes], masks, size)

    @torch.no_grad()
    def iter_predict(self, inputs: Iterable[Input], *, array_format: str = "RGB", progress: bool = False,
                     total: Optional[int] = None) -> Iterator[Detections]:
        """Detections of each input in turn, computed ``batch_size`` images at a time."""
        if array_format not in ("RGB", "BGR"):
            raise ValueError(f"array_format={array_format!r}: RGB or BGR")
        from tqdm import tqdm

        bar = tqdm(total=total, disable=not progress, desc="predicting", unit="img")
        batch: List[torch.Tensor] = []

        def run(images):
            outputs = self.runner(images)
            bar.update(len(images))
            return [self._detections(o, tuple(im.shape[-2:])) for o, im in zip(outputs, images)]

        try:
            for item in inputs:
                batch.append(self._tensor(item, array_format))
                if len(batch) == self.batch_size:
                    yield from run(batch)
                    batch = []
            if batch:
                yield from run(batch)
        finally:
            bar.close()

    def __call__(self, inputs: Union[Input, List[Input]], *, array_format: str = "RGB",
                 progress: Optional[bool] = None) -> Union[Detections, List[Detections]]:
        """Detections of one input, or a list of them for a list or tuple of inputs (a progress bar past
        10 images unless ``progress`` says otherwise)."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        show = len(items) > 10 if progress is None else progress
        results = list(self.iter_predict(items, array_format=array_format, progress=show, total=len(items)))
        return results[0] if single else results

"""Classification pretraining on the torchvision engine's trainer: the same loop, hooks (progress with ETA,
metrics.json and TensorBoard, checkpoints, SIGINT/SIGTERM, periodic evaluation), divergence guard,
precision and distributed launch as detection training; only the dataset, the model, the loader and the
evaluation differ (:class:`PretrainTrainer`). Its product is a backbone file (:mod:`resnet_backbones.weights.pretrained`).
"""
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoints import last_checkpoint, share_main_process_state
from ..errors import ConfigError, DatasetError
from ..tv.distributed import all_gather, get_local_rank, get_rank, get_world_size, is_main_process, synchronize
from ..tv.main import setup_run
from ..tv.model import resolve_device
from ..tv.train import Trainer, _unwrap, setup_logging
from ..tv.verify import verify_results
from ..weights.conventions import Conventions
from ..weights.pretrained import PRETRAINED_CONVENTIONS_NAME, save_backbone_file
from .data import (ClassificationBatchSampler, ClassificationFolder, ImageFolderSplits, check_image_files, collate,
                   epoch_schedule, image_folder_root, scan_image_folder, unreadable_images_error)
from .model import ImageClassifier, build_classifier, check_pretrain_cfg

__all__ = ["BACKBONE_FILE", "PretrainData", "PretrainTrainer", "evaluate_classifier", "main", "prepare_data",
           "schedule_from_epochs"]

logger = logging.getLogger("resnet_backbones")

BACKBONE_FILE = "model_final_backbone.pth"  # in OUTPUT_DIR: the body of model_final.pth, for MODEL.WEIGHTS
TASK = "classification"  # the results' task name (TEST.EXPECTED_RESULTS: [["classification", "top1", ...]])


@dataclass
class PretrainData:
    """The classification folder of a run: its splits (unreadable files left out where asked) and name."""

    splits: ImageFolderSplits
    dataset: str  # MODEL.RESNET_BACKBONES.PRETRAIN.DATASET

    @property
    def num_classes(self) -> int:
        return len(self.splits.classes)


def prepare_data(cfg) -> PretrainData:
    """Find the folder, list both splits and check their images (PRETRAIN.CHECK_IMAGES) before anything is
    built: every process checks its share and all raise the same one error (or, with
    MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES, leave the files out)."""
    p = cfg.MODEL.RESNET_BACKBONES.PRETRAIN
    splits = scan_image_folder(image_folder_root(p.DATASET))
    if p.NUM_CLASSES and p.NUM_CLASSES != len(splits.classes):
        raise ConfigError(f"MODEL.RESNET_BACKBONES.PRETRAIN.NUM_CLASSES={p.NUM_CLASSES} but {splits.root}/train has "
                          f"{len(splits.classes)} class folders: set it to {len(splits.classes)}, or 0 (from the folder)")
    paths = [path for path, _ in splits.train + splits.val]
    started = time.perf_counter()
    mine = check_image_files(paths[get_rank()::get_world_size()], p.CHECK_IMAGES)
    bad = sorted(b for part in all_gather(mine) for b in part)
    if p.CHECK_IMAGES != "none":
        logger.info("checked %d images of %s (%s) in %.1f s: %d unreadable", len(paths), splits.root, p.CHECK_IMAGES,
                    time.perf_counter() - started, len(bad))
    if bad:
        if not cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES:
            raise unreadable_images_error(bad, splits.root, p.CHECK_IMAGES)
        skip = {path for path, _ in bad}
        logger.warning("leaving out %d unreadable image(s) (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES): %s",
                       len(skip), sorted(skip)[:5])
        splits.train = [s for s in splits.train if s[0] not in skip]
        splits.val = [s for s in splits.val if s[0] not in skip]
    if not splits.train or not splits.val:
        raise DatasetError(f"{splits.root}: no readable image left in {'train' if not splits.train else 'val'}/")
    return PretrainData(splits, p.DATASET)


def schedule_from_epochs(cfg, num_images: int):
    """``cfg`` with SOLVER.MAX_ITER / SOLVER.STEPS from PRETRAIN.EPOCHS / STEP_EPOCHS (when EPOCHS > 0) for a
    training split of ``num_images``; the same ``cfg`` otherwise."""
    p = cfg.MODEL.RESNET_BACKBONES.PRETRAIN
    if p.EPOCHS <= 0:
        return cfg
    max_iter, steps, per_epoch = epoch_schedule(p.EPOCHS, p.STEP_EPOCHS, num_images, cfg.SOLVER.IMS_PER_BATCH)
    if (max_iter, steps) != (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)):
        logger.info("PRETRAIN.EPOCHS %s, STEP_EPOCHS %s on %d images at %d per batch (%d iterations per epoch): "
                    "SOLVER.MAX_ITER %d -> %d, SOLVER.STEPS %s -> %s", p.EPOCHS, list(p.STEP_EPOCHS), num_images,
                    cfg.SOLVER.IMS_PER_BATCH, per_epoch, cfg.SOLVER.MAX_ITER, max_iter, tuple(cfg.SOLVER.STEPS), steps)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, steps
    cfg.freeze()
    return cfg


def _dataset(cfg, samples, *, train: bool) -> ClassificationFolder:
    p = cfg.MODEL.RESNET_BACKBONES.PRETRAIN
    if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
        raise ConfigError(f"INPUT.RANDOM_FLIP={cfg.INPUT.RANDOM_FLIP!r}: classification pretraining flips "
                          "horizontally (He et al. 2016, section 3.4) or not at all: set horizontal or none")
    return ClassificationFolder(samples, train=train, input_format=cfg.INPUT.FORMAT, crop=p.CROP_SIZE,
                                scale_range=list(p.SCALE_RANGE), flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                lighting_std=p.LIGHTING_STD, test_size=p.TEST_SIZE, ten_crop=p.TEN_CROP,
                                skip_unreadable=cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: ClassificationFolder, device: torch.device, *, batch_size: int,
                        num_workers: int = 0) -> Dict[str, float]:
    """Top-1 and top-5 accuracy and error (percent) of ``model`` on ``dataset``, whose items are one crop or
    ten crops of an image (the softmax scores of an image's crops averaged, He et al. 2016, section 3.4).
    Each process evaluates every world_size-th image; the counts are summed over the processes."""
    was_training = model.training
    model.eval()
    indices = list(range(get_rank(), len(dataset), get_world_size()))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         collate_fn=collate, num_workers=num_workers)
    counts = torch.zeros(3, dtype=torch.float64)  # images, top-1 hits, top-5 hits
    unreadable: List[str] = []
    for images, targets in loader:
        unreadable += targets[0].pop("unreadable", [])
        n, crops = images.shape[:2]
        logits = model(images.flatten(0, 1)).float()
        scores = logits.softmax(dim=1).view(n, crops, -1).mean(dim=1)
        labels = torch.stack([t["label"] for t in targets]).to(scores.device)
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        counts += torch.tensor([n, hits[:, :1].any(1).sum().item(), hits.any(1).sum().item()], dtype=torch.float64)
    if get_world_size() > 1:
        dist.all_reduce(counts)
    model.train(was_training)
    if unreadable:
        logger.warning("evaluation left out %d unreadable image(s): %s", len(unreadable), unreadable[:5])
    images, top1, top5 = counts.tolist()
    top1, top5 = 100.0 * top1 / max(images, 1), 100.0 * top5 / max(images, 1)
    return {"top1": top1, "top5": top5, "top1_error": 100.0 - top1, "top5_error": 100.0 - top5, "images": images}


def conventions_of(cfg, model: ImageClassifier) -> Conventions:
    """The input conventions the body was trained with, from the config (the stride position only where a
    bottleneck has a 1x1 conv to put it in)."""
    stride = getattr(model.backbone, "stride_in_1x1", None)
    return Conventions(stride_in_1x1=stride, input_format=cfg.INPUT.FORMAT,
                       pixel_mean=tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN),
                       pixel_std=tuple(float(v) for v in cfg.MODEL.PIXEL_STD), name=PRETRAINED_CONVENTIONS_NAME)


class PretrainTrainer(Trainer):
    """The torchvision engine's :class:`~resnet_backbones.tv.train.Trainer` on a classification folder: the
    model is :func:`~resnet_backbones.pretrain.model.build_classifier`'s, the batches
    :class:`~resnet_backbones.pretrain.data.ClassificationBatchSampler`'s (deterministic in SEED and the
    iteration, so ``resume`` is exact), the evaluation :func:`evaluate_classifier` on val/ (results under
    ``classification``: top1, top5, top1_error, top5_error in percent). With ``model_final.pth`` it writes
    OUTPUT_DIR/model_final_backbone.pth, the body alone with its conventions and architecture, which
    MODEL.WEIGHTS of the detector config takes as is."""

    def __init__(self, cfg, data: PretrainData, *, resume: bool = False):
        self.data = data
        super().__init__(cfg, resume=resume)

    def build_train_dataset(self) -> ClassificationFolder:
        return _dataset(self.cfg, self.data.splits.train, train=True)

    def build_model(self) -> ImageClassifier:
        return build_classifier(self.cfg, self.data.num_classes)

    def run_step(self, iteration: int, images, targets) -> Dict[str, float]:
        """The detection step, plus ``top1_error_train``: the batch's top-1 error (%, averaged over the
        processes), which the progress line, metrics.json and TensorBoard show as the window's median (the
        training curve of the paper's Figure 4; tools/degradation_check.py draws it)."""
        values = super().run_step(iteration, images, targets)
        error = _unwrap(self.model).batch_top1_error.detach().reshape(1)
        if get_world_size() > 1:
            dist.all_reduce(error)
            error /= get_world_size()
        values["top1_error_train"] = error.item()
        return values

    def _loader(self):
        cfg = self.cfg
        sampler = ClassificationBatchSampler(len(self.dataset), cfg.SOLVER.IMS_PER_BATCH // get_world_size(),
                                             seed=self.seed, rank=get_rank(), world_size=get_world_size(),
                                             start_iter=self.start_iter)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS,
                                           persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        share_main_process_state(_unwrap(self.model))  # every process evaluates the weights rank 0 saves
        dataset = _dataset(self.cfg, self.data.splits.val, train=False)
        start = time.perf_counter()
        # The module itself: under DDP every forward would broadcast buffers, and the processes' shares of
        # val/ may differ by a batch.
        results = evaluate_classifier(_unwrap(self.model), dataset, self.device,
                                      batch_size=max(1, self.cfg.SOLVER.IMS_PER_BATCH // get_world_size()),
                                      num_workers=self.cfg.DATALOADER.NUM_WORKERS)
        logger.info("val (%s, %d images, %s): top-1 error %.2f %%, top-5 error %.2f %% (top-1 %.2f %%) in %.1f s",
                    self.data.splits.root, int(results["images"]),
                    "10-crop" if self.cfg.MODEL.RESNET_BACKBONES.PRETRAIN.TEN_CROP else "centre crop",
                    results["top1_error"], results["top5_error"], results["top1"], time.perf_counter() - start)
        return {TASK: results}

    def save_checkpoint(self, name: str, next_iter: int) -> None:
        super().save_checkpoint(name, next_iter)
        if name == "model_final" and is_main_process():
            path = os.path.join(self.cfg.OUTPUT_DIR, BACKBONE_FILE)
            model = _unwrap(self.model)
            n = save_backbone_file(path, model.backbone, conventions=conventions_of(self.cfg, model), pretraining={
                "dataset": self.data.dataset, "root": self.data.splits.root, "classes": list(self.data.splits.classes),
                "train_images": len(self.data.splits.train), "iteration": int(next_iter),
                "crop_size": int(self.cfg.MODEL.RESNET_BACKBONES.PRETRAIN.CROP_SIZE), "seed": int(self.seed)})
            logger.info("saved the body (%d tensors, no classifier) to %s: MODEL.WEIGHTS for this config's detector",
                        n, path)


def _evaluate_only(cfg, data: PretrainData, resume: bool) -> Dict[str, Dict[str, float]]:
    """Evaluate a classifier checkpoint: OUTPUT_DIR's last one with ``resume``, else MODEL.WEIGHTS."""
    path = last_checkpoint(cfg.OUTPUT_DIR) if resume else cfg.MODEL.WEIGHTS
    if not path:
        raise ConfigError("--eval-only evaluates a classifier checkpoint: MODEL.WEIGHTS OUTPUT_DIR/model_final.pth, "
                          f"or --resume for the last checkpoint in {cfg.OUTPUT_DIR}")
    device = resolve_device(cfg)
    if device.type == "cuda":
        device = torch.device("cuda", get_local_rank())
    model = build_classifier(cfg, data.num_classes).to(device)
    from ..weights.formats import load_file

    obj = load_file(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or "linear.weight" not in state:
        raise ConfigError(f"--eval-only: {path} is not a classifier checkpoint of tools/pretrain_net.py (no "
                          "linear.weight); a backbone file has no classifier to evaluate")
    model.load_state_dict(state)
    logger.info("evaluating %s", path)
    dataset = _dataset(cfg, data.splits.val, train=False)
    results = evaluate_classifier(model, dataset, device, batch_size=max(1, cfg.SOLVER.IMS_PER_BATCH // get_world_size()),
                                  num_workers=cfg.DATALOADER.NUM_WORKERS)
    logger.info("val: top-1 error %.2f %%, top-5 error %.2f %% (%d images)", results["top1_error"],
                results["top5_error"], int(results["images"]))
    return {TASK: results}


def main(cfg, config_path: str, eval_only: bool = False, resume: bool = False,
         data: Optional[PretrainData] = None) -> Dict[str, Dict[str, float]]:
    """What ``tools/pretrain_net.py`` runs in each process: check the config and the images (``data``: already
    checked by the launching process), derive an epoch schedule, train (or with ``eval_only`` evaluate), check
    TEST.EXPECTED_RESULTS on the main process."""
    check_pretrain_cfg(cfg)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR)
    data = prepare_data(cfg) if data is None else data
    cfg = schedule_from_epochs(cfg, len(data.splits.train))
    setup_run(cfg, config_path, eval_only)
    logger.info("%s: %d classes, %d training and %d validation images", data.splits.root, data.num_classes,
                len(data.splits.train), len(data.splits.val))
    if eval_only:
        results = _evaluate_only(cfg, data, resume)
    else:
        results = PretrainTrainer(cfg, data, resume=resume).train()
    if is_main_process():
        verify_results(cfg, results)
    return results

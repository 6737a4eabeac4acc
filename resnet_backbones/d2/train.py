"""The detectron2 engine: thin glue over DefaultTrainer (COCOEvaluator, our checkpointer, our datasets)."""
import logging
import os
import time
import warnings
import weakref
from typing import Iterable

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, launch
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..data import get_dataset, registered_datasets
from ..guard import LossGuard, evaluation_hint
from ..builders import inference_runner
from ..solver import amp_dtype
from .backbone import register_backbones
from .checkpoint import ResnetBackbonesCheckpointer

__all__ = ["CPUAutocastTrainer", "DivergenceHook", "Trainer", "register_dataset_names", "register_datasets",
           "launch_detectron2"]

logger = logging.getLogger("resnet_backbones")


def register_dataset_names(names: Iterable[str], cfg=None) -> None:
    """Make our dataset names (COCO under $DETECTRON2_DATASETS, the synthetic shapes and their variants,
    those of ``register_coco_instances``) known to DatasetCatalog/MetadataCatalog (synthetic data is
    generated here). Our names are checked first, so a missing dataset is our error naming the path and
    the fix; names we do not know are left to detectron2 (registered by the user)."""
    for name in names:
        if name not in registered_datasets():
            continue
        spec = get_dataset(name, cfg)
        if name in DatasetCatalog.list():
            continue  # detectron2's builtin COCO names: same files
        DatasetCatalog.register(name, lambda s=spec: load_coco_json(s.json_file, s.image_root, s.name))
        MetadataCatalog.get(name).set(json_file=spec.json_file, image_root=spec.image_root, evaluator_type="coco")


def register_datasets(cfg) -> None:
    """:func:`register_dataset_names` for DATASETS.TRAIN and DATASETS.TEST."""
    register_dataset_names(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), cfg)


class CPUAutocastTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer with the forward pass and the loss sum under CPU autocast: what
    detectron2's ``AMPTrainer`` does on CUDA, for SOLVER.AMP.ENABLED on a CPU (``AMPTrainer.run_step``
    asserts CUDA). ``precision`` is bfloat16, which keeps float32's exponent range, so no gradient
    scaler is needed; backward and the optimizer step run outside autocast, as in AMPTrainer.
    """

    def __init__(self, model, data_loader, optimizer, *, precision: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def _inner_trainer_for_device(cfg, trainer: SimpleTrainer) -> SimpleTrainer:
    """DefaultTrainer's inner trainer, with SOLVER.AMP.ENABLED made to work off CUDA: detectron2's
    AMPTrainer (fp16 + GradScaler) on CUDA; on a CPU, :class:`CPUAutocastTrainer` in bf16 where the
    CPU supports it natively, else the FP32 SimpleTrainer (``amp_dtype`` logs why)."""
    if not isinstance(trainer, AMPTrainer):
        return trainer
    dtype = amp_dtype(torch.device(cfg.MODEL.DEVICE))
    if dtype == torch.float16:  # CUDA: detectron2's own AMP
        return trainer
    args = (trainer.model, trainer.data_loader, trainer.optimizer)
    if dtype is None:
        return SimpleTrainer(*args)
    logger.info("SOLVER.AMP.ENABLED on %s: %s autocast", cfg.MODEL.DEVICE, dtype)
    return CPUAutocastTrainer(*args, precision=dtype)


class DivergenceHook(HookBase):
    """:class:`resnet_backbones.guard.LossGuard` as a hook: reads the losses SimpleTrainer wrote to the
    EventStorage for this iteration (``total_loss`` and each ``loss_*``, on the main process, every
    iteration at the default ``gather_metric_period`` 1) and raises DivergenceError on a spike.

    Register it first: hooks run in list order, so it raises before PeriodicCheckpointer saves the
    diverged weights (model_final included, saved from after_step too). after_train logs the summary.
    """

    def __init__(self, guard: LossGuard):
        self.guard = guard

    def after_step(self):
        it = self.trainer.iter
        losses = {k: v for k, (v, i) in self.trainer.storage.latest().items()
                  if i == it and (k == "total_loss" or k.startswith("loss"))}
        if "total_loss" in losses:  # absent on the other ranks (detectron2 gathers them on rank 0)
            self.guard.observe(it, losses)

    def after_train(self):
        if comm.is_main_process():
            logger.info(self.guard.summary())


class Trainer(DefaultTrainer):
    """DefaultTrainer whose MODEL.WEIGHTS go through :class:`ResnetBackbonesCheckpointer`, whose
    SOLVER.AMP.ENABLED also works on a CPU (:func:`_inner_trainer_for_device`), and which stops on a
    diverged loss before it is checkpointed (:class:`DivergenceHook`)."""

    def __init__(self, cfg):
        with warnings.catch_warnings():  # the AMPTrainer we replace off CUDA makes a CUDA GradScaler
            warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
            super().__init__(cfg)
        self._trainer = _inner_trainer_for_device(cfg, self._trainer)
        self.checkpointer = ResnetBackbonesCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self))

    def build_hooks(self):
        self.guard = LossGuard.from_cfg(self.cfg)
        return [DivergenceHook(self.guard)] + super().build_hooks()

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:  # SimpleTrainer.write_metrics' non-finite check (before the step)
            raise self.guard.non_finite(self.iter, str(e).split("loss_dict = ")[-1]) from e

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference",
                                                                                     dataset_name))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE / INFERENCE_AMP, as on the torchvision engine.
        results = super().test(cfg, inference_runner(cfg, model, torch.device(cfg.MODEL.DEVICE)), evaluators)
        if comm.is_main_process() and len(cfg.DATASETS.TEST):
            # One dataset: {"bbox": {...}}; several: {name: {"bbox": {...}}} (DefaultTrainer.test).
            per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            for name, r in per_dataset.items():
                hint = evaluation_hint(cfg, (r or {}).get("bbox"))
                if hint:
                    logger.warning("%s: %s", name, hint)
        return results


def _main(cfg, config_path: str, eval_only: bool, resume: bool):
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnet_backbones")
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    logger.info("detectron2 engine, config %s", config_path)
    # As detectron2's default_setup: a per-rank seed from SEED, cudnn.benchmark for training only.
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    if not eval_only:
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    register_backbones()
    register_datasets(cfg)
    if eval_only:
        model = Trainer.build_model(cfg)
        ResnetBackbonesCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():  # TEST.EXPECTED_RESULTS, as detectron2's train_net (exit 1 on a mismatch)
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer.train()  # DefaultTrainer.train verifies TEST.EXPECTED_RESULTS itself


def launch_detectron2(cfg, config_path: str, args) -> None:
    """tools/train_net.py's entry for --engine detectron2 (detectron2's own launch and DDP)."""
    launch(_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(cfg, config_path, args.eval_only, args.resume))

"""The detectron2 engine: thin glue over DefaultTrainer (COCOEvaluator, our checkpointer, our datasets)."""
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from typing import Iterable

import torch
from detectron2.data import (DatasetCatalog, DatasetMapper, MetadataCatalog, build_detection_test_loader,
                             build_detection_train_loader)
from detectron2.data.datasets import load_coco_json
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, launch
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..config import ConfigError
from ..data import DatasetError, config_datasets, get_dataset, registered_datasets
from ..data.validate import UnreadableImageError, read_image
from ..data.workers import plain_worker_errors
from ..guard import LossGuard, TrainingInterrupted, checkpoint_note, evaluation_hint, last_checkpoint
from ..weights import WeightsError
from ..builders import inference_runner
from ..solver import amp_dtype
from .backbone import register_backbones
from .checkpoint import ResnetBackbonesCheckpointer

__all__ = ["CPUAutocastTrainer", "DivergenceHook", "ReadCheckedMapper", "SignalCheckpointHook", "Trainer",
           "register_dataset_names", "register_datasets", "launch_detectron2"]

logger = logging.getLogger("resnet_backbones")


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
    skipped for it), which :class:`_CountSkipped` hands to the guard on the main process.
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


class _CountSkipped:
    """The training loader, passing each batch's skipped files (``"unreadable"``) to the guard."""

    def __init__(self, loader, guard: LossGuard):
        self.loader, self.guard = loader, guard

    def __iter__(self):
        for batch in self.loader:
            self.guard.skip_unreadable(p for d in batch for p in d.pop("unreadable", ()))
            yield batch


class _QuietInputErrors(logging.Filter):
    """Drops detectron2's "Exception during training:" traceback for input errors: tools/train_net.py
    prints their one-line message (naming the file and the fix) and exits with status 2."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Exception during training:"
                    and isinstance(exc, (ConfigError, DatasetError, WeightsError)))


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


@contextlib.contextmanager
def _ddp_of_cpu_modules():
    """detectron2's ``create_ddp_model`` (which ``DefaultTrainer.__init__`` calls) always passes
    ``device_ids=[local rank]``, which DistributedDataParallel refuses for a module on the CPU: so
    ``--num-gpus N`` without CUDA (N CPU processes on gloo, as on the torchvision engine) would fail.
    Within this context a CPU module gets ``device_ids=None``, what DDP requires there; CUDA modules
    are wrapped exactly as detectron2 wraps them."""
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


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
        # Called from TrainerBase.train's finally: an exception on its way out is how the run ended.
        error = sys.exc_info()[1]
        if error is not None:
            self.guard.ended_by(self.trainer.iter, error)
        if comm.is_main_process():
            logger.info(self.guard.summary())


class SignalCheckpointHook(HookBase):
    """SIGINT / SIGTERM stop training after the current iteration with a checkpoint of it, then raise
    :class:`TrainingInterrupted` (exit 130 / 143), as the torchvision engine does; ``--resume``
    continues at the next iteration. Register it last, after PeriodicCheckpointer and the writers."""

    def __init__(self):
        self._signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        logger.warning("signal %d: stopping after this iteration and saving a checkpoint", signum)
        self._signum = signum

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def after_step(self):
        if self._signum is None:
            return
        it = self.trainer.iter
        self.trainer.checkpointer.save(f"model_{it:07d}", iteration=it)
        raise TrainingInterrupted(self._signum, it + 1, last_checkpoint(self.trainer.cfg.OUTPUT_DIR) or "")

    def after_train(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}


class Trainer(DefaultTrainer):
    """DefaultTrainer whose MODEL.WEIGHTS go through :class:`ResnetBackbonesCheckpointer`, whose
    SOLVER.AMP.ENABLED also works on a CPU (:func:`_inner_trainer_for_device`), which stops on a
    diverged loss before it is checkpointed (:class:`DivergenceHook`), on SIGINT/SIGTERM after a
    checkpoint (:class:`SignalCheckpointHook`), and on an unreadable image with the file named
    (:class:`ReadCheckedMapper`; skipped instead with MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)."""

    def __init__(self, cfg):
        self.guard = LossGuard.from_cfg(cfg)
        with warnings.catch_warnings():  # the AMPTrainer we replace off CUDA makes a CUDA GradScaler
            warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
            with _ddp_of_cpu_modules():
                super().__init__(cfg)
        self._trainer = _inner_trainer_for_device(cfg, self._trainer)
        self._trainer.data_loader = _CountSkipped(self._trainer.data_loader, self.guard)
        self.checkpointer = ResnetBackbonesCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self))
        train_loop_logger = logging.getLogger("detectron2.engine.train_loop")
        if not any(isinstance(f, _QuietInputErrors) for f in train_loop_logger.filters):
            train_loop_logger.addFilter(_QuietInputErrors())

    def build_hooks(self):
        return [DivergenceHook(self.guard)] + super().build_hooks() + [SignalCheckpointHook()]

    @classmethod
    def build_train_loader(cls, cfg):
        skip = cfg.MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES
        return build_detection_train_loader(cfg, mapper=ReadCheckedMapper(DatasetMapper(cfg, True), skip=skip))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # Never skipped in evaluation: an AP without some of its images is not that dataset's AP.
        return build_detection_test_loader(cfg, dataset_name, mapper=ReadCheckedMapper(DatasetMapper(cfg, False)))

    def run_step(self):
        try:
            with plain_worker_errors():  # a loader worker's error with its own message
                super().run_step()
        except FloatingPointError as e:  # SimpleTrainer.write_metrics' non-finite check (before the step)
            raise self.guard.non_finite(self.iter, str(e).split("loss_dict = ")[-1]) from e
        except DatasetError as e:
            skip = (" Or skip unreadable images: MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True."
                    if isinstance(e, UnreadableImageError) else "")
            raise type(e)(f"training stopped at iteration {self.iter}: {e}.{skip} "
                          f"{checkpoint_note(self.cfg.OUTPUT_DIR)}") from None

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference",
                                                                                     dataset_name))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE / INFERENCE_AMP, as on the torchvision engine.
        with plain_worker_errors():  # a loader worker's error (an unreadable image) with its own message
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

"""The detectron2 engine: thin glue over DefaultTrainer (COCOEvaluator, our checkpointer, our datasets)."""
import contextlib
import logging
import os
import warnings
import weakref

import torch
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, launch
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..checkpoints import share_main_process_state
from ..data.loader_errors import data_error_stop, plain_worker_errors
from ..divergence import LossGuard
from ..errors import ConfigError, DatasetError, WeightsError
from ..hints import evaluation_hint
from ..inference import inference_runner
from .amp import amp_trainer
from .backbone import plain_res5_head, register_backbones, zero_init_res5_head
from .checkpoint import ResnetBackbonesCheckpointer
from .datasets import CountSkipped, ReadCheckedMapper, register_dataset_names, register_datasets
from .hooks import DivergenceHook, SignalCheckpointHook

__all__ = ["Trainer", "launch_detectron2", "register_datasets"]

logger = logging.getLogger("resnet_backbones")


class _QuietInputErrors(logging.Filter):
    """Drops detectron2's "Exception during training:" traceback for input errors: tools/train_net.py
    prints their one-line message (naming the file and the fix) and exits with status 2."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Exception during training:"
                    and isinstance(exc, (ConfigError, DatasetError, WeightsError)))


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


class Trainer(DefaultTrainer):
    """DefaultTrainer whose MODEL.WEIGHTS go through :class:`ResnetBackbonesCheckpointer`, whose
    SOLVER.AMP.ENABLED also works on a CPU (:func:`~resnet_backbones.d2.amp.amp_trainer`), which stops on a
    diverged loss before it is checkpointed (:class:`DivergenceHook`), on SIGINT/SIGTERM after a
    checkpoint (:class:`SignalCheckpointHook`), and on an unreadable image with the file named
    (:class:`ReadCheckedMapper`; skipped instead with MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES)."""

    def __init__(self, cfg):
        self.guard = LossGuard.from_cfg(cfg)
        with warnings.catch_warnings():  # the AMPTrainer we replace off CUDA makes a CUDA GradScaler
            warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
            with _ddp_of_cpu_modules():
                super().__init__(cfg)
        if isinstance(self._trainer, AMPTrainer):  # SOLVER.AMP.ENABLED, made to work off CUDA
            self._trainer = amp_trainer(self._trainer.model, self._trainer.data_loader, self._trainer.optimizer,
                                        cfg.MODEL.DEVICE)
        self._trainer.data_loader = CountSkipped(self._trainer.data_loader, self.guard)
        self.checkpointer = ResnetBackbonesCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self))
        train_loop_logger = logging.getLogger("detectron2.engine.train_loop")
        if not any(isinstance(f, _QuietInputErrors) for f in train_loop_logger.filters):
            train_loop_logger.addFilter(_QuietInputErrors())

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        plain_res5_head(cfg, model)  # detectron2's Res5ROIHeads builds its own (residual) blocks
        zero_init_res5_head(cfg, model)
        return model

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
            raise data_error_stop(e, self.iter, self.cfg.OUTPUT_DIR) from None

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference",
                                                                                     dataset_name))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE / INFERENCE_AMP, as on the torchvision engine.
        if len(cfg.DATASETS.TEST):
            share_main_process_state(model)  # the weights and BN statistics model_final.pth holds
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
    if eval_only:  # the test sets only: --eval-only needs no training set (a model-zoo checkpoint without COCO train)
        register_dataset_names(list(cfg.DATASETS.TEST), cfg)
        model = Trainer.build_model(cfg)
        ResnetBackbonesCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():  # TEST.EXPECTED_RESULTS, as detectron2's train_net (exit 1 on a mismatch)
            verify_results(cfg, results)
        return results
    register_datasets(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer.train()  # DefaultTrainer.train verifies TEST.EXPECTED_RESULTS itself


def launch_detectron2(cfg, config_path: str, args) -> None:
    """tools/train_net.py's entry for --engine detectron2 (detectron2's own launch and DDP)."""
    launch(_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(cfg, config_path, args.eval_only, args.resume))

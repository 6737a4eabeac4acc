"""The detectron2 engine: thin glue over DefaultTrainer (COCOEvaluator, our checkpointer, our datasets)."""
import logging
import os
import weakref

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.engine import DefaultTrainer, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import get_dataset, registered_datasets
from .backbone import register_backbones
from .checkpoint import ResnetBackbonesCheckpointer

__all__ = ["Trainer", "register_datasets", "launch_detectron2"]

logger = logging.getLogger("resnet_backbones")


def register_datasets(cfg) -> None:
    """Make DATASETS.TRAIN/TEST known to DatasetCatalog/MetadataCatalog (synthetic data generated here).

    Names we know (COCO under $DETECTRON2_DATASETS, synthetic shapes, register_coco_instances) are
    checked first, so a missing dataset is our error naming the path and the fix.
    """
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in registered_datasets():
            continue  # a dataset registered with detectron2 by the user
        spec = get_dataset(name, cfg)
        if name in DatasetCatalog.list():
            continue  # detectron2's builtin COCO names: same files
        DatasetCatalog.register(name, lambda s=spec: load_coco_json(s.json_file, s.image_root, s.name))
        MetadataCatalog.get(name).set(json_file=spec.json_file, image_root=spec.image_root, evaluator_type="coco")


class Trainer(DefaultTrainer):
    """DefaultTrainer whose MODEL.WEIGHTS go through :class:`ResnetBackbonesCheckpointer`."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer = ResnetBackbonesCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference",
                                                                                     dataset_name))


def _main(cfg, config_path: str, eval_only: bool, resume: bool):
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnet_backbones")
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    logger.info("detectron2 engine, config %s", config_path)
    register_backbones()
    register_datasets(cfg)
    if eval_only:
        model = Trainer.build_model(cfg)
        ResnetBackbonesCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer.train()


def launch_detectron2(cfg, config_path: str, args) -> None:
    """tools/train_net.py's entry for --engine detectron2 (detectron2's own launch and DDP)."""
    launch(_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(cfg, config_path, args.eval_only, args.resume))

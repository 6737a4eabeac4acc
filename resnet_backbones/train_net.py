"""Train and evaluate Faster/Mask R-CNN with resnet_backbones (detectron2's train_net.py interface).

    resnet-backbones-train-net --config faster_rcnn_R101.yaml        # installed console command
    python -m resnet_backbones.train_net --config quick_schedules/faster_rcnn_R18_synthetic.yaml
    python tools/train_net.py --config mask_rcnn_R50.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config faster_rcnn_R50.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16
    python tools/train_net.py --config faster_rcnn_R50.yaml \
        --dataset my_train data/train.json data/train --dataset my_val data/val.json data/val \
        DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)' MODEL.ROI_HEADS.NUM_CLASSES 3
    resnet-backbones-train-net --config new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py train.max_iter=100

Engines: detectron2 (DefaultTrainer) when importable, else the torchvision engine; the same yaml
means the same model on both. Trailing KEY VALUE pairs override a yaml config. A LazyConfig (.py)
runs on the detectron2 engine with key=value overrides, as detectron2's lazyconfig_train_net.py.

Exit status: 0 done; 2 an input error (config, dataset, image, weights: the message names the fix;
no traceback); 1 a diverged or non-finite run, or TEST.EXPECTED_RESULTS not met; 130 / 143 stopped by
SIGINT / SIGTERM after writing a checkpoint (128 + the signal, as schedulers expect).
"""
import argparse
import signal
import sys

from .checkpoints import last_checkpoint
from .config import load_config, resolve_config_path
from .d2 import detectron2_available
from .data import check_dataset_files
from .data.loader_errors import original_message
from .errors import ConfigError, DatasetError, ResultsVerificationError, TrainingInterrupted, WeightsError
from .hints import c4_from_scratch_warning, random_frozen_bn_warning


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True, metavar="NAME_OR_PATH",
                   help="a yaml or LazyConfig .py path, or the short name of a shipped config "
                        "(faster_rcnn_R101.yaml, new_baselines/mask_rcnn_R152_FPN_100ep_LSJ.py); "
                        "python -c 'from resnet_backbones import model_zoo; print(model_zoo.list_configs())' lists them")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS (or, with --resume, the last checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine (one per GPU; CPU processes on gloo without CUDA)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://<machine 0 address>:<port> for several machines")
    p.add_argument("--engine", choices=("auto", "detectron2", "torchvision"), default="auto")
    add_dataset_argument(p)
    p.add_argument("opts", nargs="*", help="config overrides: KEY VALUE pairs for a yaml, key=value for a LazyConfig")
    return p.parse_intermixed_args(argv)  # flags may follow the KEY VALUE pairs


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """``--dataset NAME JSON_FILE IMAGE_ROOT``, repeatable: your own COCO-format data, by name (the
    same option in train_net, tools/check_dataset.py, tools/demo.py and tools/export_model.py)."""
    parser.add_argument("--dataset", nargs=3, action="append", default=[], metavar=("NAME", "JSON_FILE", "IMAGE_ROOT"),
                        help="a COCO-format dataset that DATASETS.TRAIN / DATASETS.TEST can name (repeatable); "
                             "added to MODEL.RESNET_BACKBONES.DATASETS, so it reaches every process of a launch")


def _error(e: BaseException) -> str:
    return f"error: {original_message(e) if original_message(e) is not None else e}"


def run_guarded(fn, *args, **kwargs) -> int:
    """Call ``fn`` (an engine's launch) and map how it ended to the exit status (module docstring),
    printing one line for the known failures, without a traceback."""
    try:
        fn(*args, **kwargs)
    except (ConfigError, DatasetError, WeightsError) as e:  # input errors: the message names the fix
        print(_error(e), file=sys.stderr)
        return 2
    except (ResultsVerificationError, FloatingPointError) as e:  # a failed check or a diverged run: exit 1
        print(_error(e), file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"{e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _run_lazy(path: str, args, engine: str) -> int:
    """A LazyConfig (.py): detectron2's lazyconfig_train_net loop, on the detectron2 engine only."""
    if engine != "detectron2":
        raise ConfigError(f"{path} is a detectron2 LazyConfig, which runs on the detectron2 engine only; "
                          "install detectron2 from its source, or use the yaml config of the same model "
                          "(model_zoo.list_configs()) on the torchvision engine")
    if args.dataset:
        raise ConfigError("--dataset is for yaml configs; a LazyConfig names its datasets in Python: call "
                          "resnet_backbones.data.register_coco_instances(name, json_file, image_root) at the top "
                          "of the config file (every process of a launch loads it)")
    bad = [o for o in args.opts if "=" not in o]
    if bad:
        raise ConfigError(f"LazyConfig overrides are key=value (e.g. train.max_iter=100), got {bad}")
    from .d2.lazy import launch_lazy

    print(f"engine: detectron2 (LazyConfig); config: {path}", flush=True)
    return run_guarded(launch_lazy, path, args)


def main(argv=None) -> int:
    args = parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "detectron2" if detectron2_available() else "torchvision"
    elif engine == "detectron2" and not detectron2_available():
        print("error: --engine detectron2 but detectron2 is not importable; install it from its source "
              "(https://github.com/facebookresearch/detectron2) or use --engine torchvision", file=sys.stderr)
        return 2
    try:
        path = resolve_config_path(args.config)
        if path.endswith(".py"):
            return _run_lazy(path, args, engine)
        cfg = load_config(path, args.opts, use_detectron2=engine == "detectron2", datasets=args.dataset)
        from .tv.model import resolve_device

        resolve_device(cfg)  # the COCO configs say cuda, as detectron2's: on a CPU, one error naming the fix
        # Here, before --num-gpus starts its processes: a missing dataset is one error, not one per process.
        check_dataset_files([*(() if args.eval_only else cfg.DATASETS.TRAIN), *cfg.DATASETS.TEST], cfg)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"engine: {engine}; config: {path}", flush=True)
    loads_weights = bool(cfg.MODEL.WEIGHTS) or bool(args.resume and last_checkpoint(cfg.OUTPUT_DIR))
    warnings = [] if args.eval_only else [
        random_frozen_bn_warning(cfg.MODEL.RESNETS.NORM, loads_weights, norm_key="MODEL.RESNETS.NORM",
                                 weights_key="MODEL.WEIGHTS",
                                 fix="MODEL.RESNETS.NORM BN (or SyncBN, GN) and MODEL.BACKBONE.FREEZE_AT 0, as "
                                     "quick_schedules/Base-synthetic.yaml"),
        c4_from_scratch_warning(cfg.MODEL.ROI_HEADS.NAME, loads_weights)]
    for warning in filter(None, warnings):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if engine == "detectron2":
        from .d2.train import launch_detectron2

        return run_guarded(launch_detectron2, cfg, path, args)
    from .tv import check_supported, launch
    from .tv.main import main as tv_main

    def run():
        check_supported(cfg)
        launch(tv_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(cfg, path, args.eval_only, args.resume))

    return run_guarded(run)


def cli() -> None:
    """The ``resnet-backbones-train-net`` console command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()

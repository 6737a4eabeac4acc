"""Pretrain a detector's body as an image classifier (He et al. 2016, section 3.4), on the torchvision
engine's trainer. The product, OUTPUT_DIR/model_final_backbone.pth, is MODEL.WEIGHTS for the detector
config whose body it is, on either engine.

    python tools/pretrain_net.py --config pretrain/R-18_synthetic.yaml    # the embedded set: ~7 min of training, 2-core CPU
    python tools/pretrain_net.py --config pretrain/R-50.yaml --data /data/imagenet --num-gpus 8
    python tools/pretrain_net.py --config pretrain/R-50.yaml --data /data/imagenet --resume
    python tools/pretrain_net.py --config pretrain/R-50.yaml --data /data/imagenet --eval-only \\
        MODEL.WEIGHTS output/pretrain/R-50/model_final.pth MODEL.RESNET_BACKBONES.PRETRAIN.TEN_CROP True
    python tools/train_net.py --config faster_rcnn_R50.yaml MODEL.WEIGHTS output/pretrain/R-50/model_final_backbone.pth

--data DIR holds train/<class>/<images> and val/<class>/<images> (torchvision's ImageFolder layout, as
ImageNet's). Trailing KEY VALUE pairs override the yaml (MODEL.RESNET_BACKBONES.PRETRAIN.*, SOLVER.*, ...).

Exit status, as tools/train_net.py: 0 done; 2 an input error (config, dataset, image, weights: the message
names the fix); 1 a diverged or non-finite run, or TEST.EXPECTED_RESULTS not met; 130 / 143 stopped by
SIGINT / SIGTERM after writing a checkpoint (--resume continues from it).
"""
import argparse
import os
import sys

from ..config import load_config, resolve_config_path
from ..errors import ConfigError
from ..train_net import run_guarded
from .data import SYNTHETIC_SET

__all__ = ["cli", "main", "parse_args"]

DATASET_KEY = "MODEL.RESNET_BACKBONES.PRETRAIN.DATASET"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="pretrain_net.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True, metavar="NAME_OR_PATH",
                   help="a yaml path, or the short name of a shipped config (pretrain/R-50.yaml, "
                        "pretrain/R-18_synthetic.yaml)")
    p.add_argument("--data", metavar="DIR",
                   help=f"the classification folder (DIR/train/<class>/*, DIR/val/<class>/*), or {SYNTHETIC_SET!r} "
                        f"for the embedded set; sets {DATASET_KEY}")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate MODEL.WEIGHTS (a classifier checkpoint, OUTPUT_DIR/model_final.pth) or, with "
                        "--resume, the last checkpoint, on DIR/val")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine (one per GPU; CPU processes on "
                                                           "gloo without CUDA)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://<machine 0 address>:<port> for several machines")
    p.add_argument("opts", nargs="*", help="config overrides: KEY VALUE pairs")
    return p.parse_intermixed_args(argv)


def _absolute_dataset(value: str) -> str:
    """A folder made absolute (so OUTPUT_DIR/config.yaml reruns from anywhere); the embedded set's name as is."""
    return value if value in ("", SYNTHETIC_SET) else os.path.abspath(os.path.expanduser(value))


def load_pretrain_config(config: str, opts=(), data=None):
    """The config of ``tools/pretrain_net.py --config CONFIG [--data DATA] OPTS``, frozen."""
    path = resolve_config_path(config)
    if path.endswith(".py"):
        raise ConfigError(f"{path} is a LazyConfig; pretraining reads yaml configs (pretrain/*.yaml)")
    opts = list(opts) + ([DATASET_KEY, data] if data else [])
    cfg = load_config(path, opts)
    dataset = _absolute_dataset(cfg.MODEL.RESNET_BACKBONES.PRETRAIN.DATASET)
    if dataset != cfg.MODEL.RESNET_BACKBONES.PRETRAIN.DATASET:
        cfg.defrost()
        cfg.MODEL.RESNET_BACKBONES.PRETRAIN.DATASET = dataset
        cfg.freeze()
    return path, cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        path, cfg = load_pretrain_config(args.config, args.opts, args.data)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pretraining: config {path}; data {cfg.MODEL.RESNET_BACKBONES.PRETRAIN.DATASET or '(none)'}", flush=True)
    from ..tv import launch
    from .model import validate_pretrain_cfg
    from .train import main as pretrain_main
    from .train import prepare_data

    def run():
        # Input errors before any process is spawned: a spawned process's error would come back as a
        # traceback. Under torchrun every process checks its share of the images instead.
        validate_pretrain_cfg(cfg)
        data = None if int(os.environ.get("WORLD_SIZE", "1")) > 1 else prepare_data(cfg)
        launch(pretrain_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(cfg, path, args.eval_only, args.resume, data))

    return run_guarded(run)


def cli() -> None:
    """The ``resnet-backbones-pretrain-net`` console command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()

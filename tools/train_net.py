#!/usr/bin/env python
"""Train and evaluate Faster/Mask R-CNN with resnet_backbones (detectron2's train_net.py interface).

    python tools/train_net.py --config faster_rcnn_R101.yaml
    python tools/train_net.py --config quick_schedules/faster_rcnn_R18_synthetic.yaml
    python tools/train_net.py --config mask_rcnn_R50.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config faster_rcnn_R50.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16

Engines: detectron2 (DefaultTrainer) when importable, else the torchvision engine; the same yaml
means the same model on both. Trailing KEY VALUE pairs override the config.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from resnet_backbones.config import ConfigError, load_config, resolve_config_path  # noqa: E402
from resnet_backbones.d2 import detectron2_available  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True, metavar="NAME_OR_PATH",
                   help="a yaml path, or a name inside configs/ (e.g. faster_rcnn_R101.yaml)")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS (or, with --resume, the last checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine (one per GPU; CPU processes on gloo without CUDA)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://<machine 0 address>:<port> for several machines")
    p.add_argument("--engine", choices=("auto", "detectron2", "torchvision"), default="auto")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    return p.parse_intermixed_args(argv)  # flags may follow the KEY VALUE pairs


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
        cfg = load_config(path, args.opts, use_detectron2=engine == "detectron2")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"engine: {engine}; config: {path}", flush=True)
    if engine == "detectron2":
        from resnet_backbones.d2.train import launch_detectron2

        launch_detectron2(cfg, path, args)
        return 0
    from resnet_backbones.data import DatasetError
    from resnet_backbones.tv import check_supported, launch
    from resnet_backbones.tv.main import ResultsVerificationError, main as tv_main
    from resnet_backbones.weights import WeightsError

    try:
        check_supported(cfg)
        launch(tv_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(cfg, path, args.eval_only, args.resume))
    except (ConfigError, DatasetError, WeightsError) as e:  # input errors: the message names the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ResultsVerificationError as e:  # as detectron2's verify_results: exit status 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

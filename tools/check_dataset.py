#!/usr/bin/env python
"""Check datasets before a long run: the load-time checks every run makes (every listed image exists,
categories, image ids and boxes of every annotation), then every image decoded, in parallel, with a
progress bar (only decoding finds a truncated file). Exit status 0: all good; 2: problems, listed.

    python tools/check_dataset.py coco_2017_train coco_2017_val          # registered names
    python tools/check_dataset.py --dataset my_train data/train.json data/train   # your own (repeatable)
    python tools/check_dataset.py --json my/instances.json --images my/images/
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from resnet_backbones.config import ConfigError  # noqa: E402
from resnet_backbones.data import DatasetError, register_coco_instances  # noqa: E402
from resnet_backbones.data.catalog import normalize_config_datasets  # noqa: E402
from resnet_backbones.data import check_dataset  # noqa: E402
from resnet_backbones.train_net import add_dataset_argument  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="registered dataset names (coco_2017_train, synthetic_shapes_val, ...)")
    p.add_argument("--json", help="a COCO instances json (with --images) instead of a name")
    p.add_argument("--images", help="the folder its file_name entries are relative to")
    add_dataset_argument(p)
    p.add_argument("--workers", type=int, default=0, help="decoding threads (default: one per CPU)")
    args = p.parse_args(argv)
    names = list(args.names)
    if bool(args.json) != bool(args.images):
        p.error("--json and --images go together")
    if args.json:
        register_coco_instances("check_dataset_json", args.json, args.images)
        names.append("check_dataset_json")
    try:
        own = normalize_config_datasets(args.dataset)  # as train_net checks them
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, json_file, image_root in own:
        register_coco_instances(name, json_file, image_root)
        if name not in names:
            names.append(name)
    if not names:
        p.error("give dataset names, --dataset NAME JSON_FILE IMAGE_ROOT or --json/--images")
    status = 0
    for name in names:
        try:
            failures = check_dataset(name, workers=args.workers)
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        for line in failures:
            print(f"error: {line}", file=sys.stderr)
        print(f"{name}: {'OK' if not failures else f'{len(failures)} image(s) cannot be used'}")
        status = status or (2 if failures else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""detectron2's tools/train_net.py interface; the same program as the installed console command
``resnet-backbones-train-net`` and ``python -m resnet_backbones.train_net`` (see that module).

    python tools/train_net.py --config faster_rcnn_R101.yaml
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from resnet_backbones.train_net import cli  # noqa: E402

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""Classification pretraining of a detector's body (He et al. 2016, section 3.4); the same program as the
installed console command ``resnet-backbones-pretrain-net`` and ``python -m resnet_backbones.pretrain.cli``.

    python tools/pretrain_net.py --config pretrain/R-18_synthetic.yaml
    python tools/pretrain_net.py --config pretrain/R-50.yaml --data /data/imagenet --num-gpus 8
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from resnet_backbones.pretrain.cli import cli  # noqa: E402

if __name__ == "__main__":
    cli()

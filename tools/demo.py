#!/usr/bin/env python
"""Run a trained detector on image files and write PNGs with boxes, labels, scores and masks drawn.

    python tools/demo.py --config quick_schedules/mask_rcnn_R18_synthetic.yaml \
        --input img1.png img2.jpg --output demo_out/ MODEL.WEIGHTS output/mask_rcnn_R18_synthetic/model_final.pth

Class names come from DATASETS.TRAIN's annotations (falling back to class indices); a model trained
on your own data names its dataset as in training:

    python tools/demo.py --config faster_rcnn_R50.yaml --dataset my_train data/train.json data/train \
        DATASETS.TRAIN '("my_train",)' MODEL.ROI_HEADS.NUM_CLASSES 3 MODEL.WEIGHTS output/model_final.pth \
        --input photo.jpg --output demo/
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.data import read_image  # noqa: E402
from resnet_backbones.errors import ConfigError, DatasetError, WeightsError  # noqa: E402
from resnet_backbones.predictor import Detections, Predictor  # noqa: E402
from resnet_backbones.train_net import add_dataset_argument  # noqa: E402


def draw(image_rgb: np.ndarray, detections: Detections) -> Image.Image:
    canvas = torch.from_numpy(image_rgb).permute(2, 0, 1).contiguous()
    if len(detections) and detections.masks is not None:
        canvas = draw_segmentation_masks(canvas, detections.masks, alpha=0.45)
    labels = [f"{n} {float(s):.2f}" for n, s in zip(detections.class_names, detections.scores)]
    if len(detections):
        canvas = draw_bounding_boxes(canvas, detections.boxes, labels=labels, width=2, colors="yellow")
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files")
    p.add_argument("--output", required=True, help="folder for the PNGs")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    add_dataset_argument(p)
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides (MODEL.WEIGHTS ...)")
    args = p.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.opts, use_detectron2=False, datasets=args.dataset)
        predictor = Predictor(cfg, batch_size=args.batch_size)
    except (ConfigError, WeightsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    for start in range(0, len(args.input), args.batch_size):  # a batch of images in memory at a time
        paths = args.input[start:start + args.batch_size]
        try:
            images = [read_image(path) for path in paths]  # the engines' reader: EXIF orientation applied
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for path, rgb, detections in zip(paths, images, predictor(images)):
            kept = detections.above(args.confidence_threshold)
            dest = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
            draw(rgb, kept).save(dest)
            shown = [f"{n} {float(s):.2f}" for n, s in zip(kept.class_names[:10], kept.scores[:10])]
            found = ", ".join(shown) + (", ..." if len(kept) > len(shown) else "")  # the 10 best named
            print(f"{path}: {len(kept)} detections{f' ({found})' if found else ''} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

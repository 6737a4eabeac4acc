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

from resnet_backbones.config import ConfigError, load_config  # noqa: E402
from resnet_backbones.data import DatasetError, read_image  # noqa: E402
from resnet_backbones.train_net import add_dataset_argument  # noqa: E402
from resnet_backbones.weights import WeightsError  # noqa: E402


def class_names(cfg):
    """The category names of DATASETS.TRAIN's json, in the model's class order (sorted by category id,
    as both engines map them); class numbers where the dataset is not given or not there."""
    from resnet_backbones.data import COCOInstances, get_dataset

    try:
        return COCOInstances(get_dataset(cfg.DATASETS.TRAIN[0], cfg)).class_names
    except IndexError:
        pass
    except DatasetError as e:
        print(f"warning: class names as indices: {str(e).splitlines()[0]}", file=sys.stderr)
    return [str(i) for i in range(1, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)]


def draw(image_rgb: np.ndarray, out: dict, names, threshold: float) -> Image.Image:
    canvas = torch.from_numpy(image_rgb).permute(2, 0, 1).contiguous()
    keep = out["scores"] >= threshold
    if "masks" in out and keep.any():
        canvas = draw_segmentation_masks(canvas, out["masks"][keep, 0].bool(), alpha=0.45)
    labels = [f"{names[int(c) - 1]} {float(s):.2f}" for c, s in zip(out["labels"][keep], out["scores"][keep])]
    if keep.any():
        canvas = draw_bounding_boxes(canvas, out["boxes"][keep], labels=labels, width=2, colors="yellow")
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files")
    p.add_argument("--output", required=True, help="folder for the PNGs")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    add_dataset_argument(p)
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides (MODEL.WEIGHTS ...)")
    args = p.parse_intermixed_args(argv)
    from resnet_backbones.tv.model import build_model, resolve_device
    from resnet_backbones.weights.resolve import load_model_weights

    try:
        cfg = load_config(args.config, args.opts, use_detectron2=False, datasets=args.dataset)
        names = class_names(cfg)
        device = resolve_device(cfg)
        model = build_model(cfg).to(device).eval()
        if load_model_weights(model, cfg) != "detector":
            raise ConfigError("MODEL.WEIGHTS must be a trained detector checkpoint (e.g. OUTPUT_DIR/model_final.pth)")
    except (ConfigError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    for path in args.input:
        try:
            rgb = read_image(path)  # the engines' reader: EXIF orientation applied, as detectron2's read_image
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        if cfg.INPUT.FORMAT == "BGR":
            tensor = tensor.flip(0)
        with torch.no_grad():
            out = {k: v.cpu() for k, v in model([tensor])[0].items()}
        dest = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        draw(rgb, out, names, args.confidence_threshold).save(dest)
        kept = out["scores"] >= args.confidence_threshold
        best = zip(out["labels"][kept][:10], out["scores"][kept][:10])
        shown = [f"{names[int(c) - 1]} {float(s):.2f}" for c, s in best]
        found = ", ".join(shown) + (", ..." if int(kept.sum()) > len(shown) else "")  # the 10 best named
        print(f"{path}: {int(kept.sum())} detections{f' ({found})' if found else ''} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

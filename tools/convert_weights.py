#!/usr/bin/env python
"""Convert ResNet weights of any supported format into a file our builders and detectron2 both load.

Examples:
    python tools/convert_weights.py R-50.pkl R-50-converted.pth                  # MSRA caffe2 .pkl
    python tools/convert_weights.py resnet101.pth r101.pth --format torchvision  # torchvision file
    python tools/convert_weights.py torchvision://ResNet101_Weights.IMAGENET1K_V2 r101.pth
    python tools/convert_weights.py model_final.pth body.pth --target body       # detectron2 C4 layout

Detector checkpoints (Faster/Mask R-CNN FPN) move between the engines with --to:
    python tools/convert_weights.py model_final_f10217.pkl tv_model.pth --to torchvision   # detectron2 -> torchvision engine
    python tools/convert_weights.py output/model_final.pth d2_model.pth --to detectron2     # torchvision engine -> detectron2
Every tensor is renamed, the background class row moved (detectron2: last; torchvision: first), and
the background box deltas / mask channel added or dropped; see resnet_backbones/weights/detector.py.
Either engine also reads the other's checkpoint directly through MODEL.WEIGHTS.

The output of a backbone conversion holds {"model": {...}, "__author__": "resnet_backbones", "conventions": {...}}; point
MODEL.WEIGHTS at it. The conventions (stride position, RGB/BGR, pixel mean/std) are printed, and the
configs' MODEL.RESNETS.STRIDE_IN_1X1, INPUT.FORMAT and MODEL.PIXEL_MEAN/STD must match them.
"""
import argparse
import json
import sys

import torch

from resnet_backbones.weights import FORMATS, WeightsError, fetch_source, read_weights, save_converted
from resnet_backbones.weights.convert import save_detector
from resnet_backbones.weights.detector import detector_layout, num_classes_of, to_detectron2, to_torchvision


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="weight file or named source (torchvision://, detectron2://, timm://, https://)")
    parser.add_argument("output", help="output .pth")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--target", default="fpn", choices=("fpn", "body"),
                        help="name the body as in a detectron2 FPN model (backbone.bottom_up.*) or a C4 one (backbone.*)")
    parser.add_argument("--keep-classifier", action="store_true", help="also write the ImageNet classifier as linear.*")
    parser.add_argument("--to", choices=("detectron2", "torchvision"),
                        help="for a detector checkpoint: the layout to write (required for detectors)")
    args = parser.parse_args(argv)
    try:
        obj = fetch_source(args.source).load()
        state = obj.get("model", obj) if isinstance(obj, dict) else obj
        layout = detector_layout(state) if isinstance(state, dict) else ""
        if layout:
            if args.to is None:
                raise WeightsError(f"{args.source} is a {layout} detector checkpoint: pass --to detectron2 or "
                                   "--to torchvision")
            convert = {"torchvision": to_torchvision, "detectron2": to_detectron2}[args.to]
            det = convert(state, args.source) if args.to != layout else None
            out_state = det.state if det else {k: torch.as_tensor(v) for k, v in state.items()}
            n = save_detector(out_state, args.output, layout=args.to)
            print(f"wrote {n} tensors: a {layout} detector of {num_classes_of(out_state)} classes in the "
                  f"{args.to} layout, to {args.output}")
            for k in det.dropped if det else []:
                print(f"dropped on purpose: {k}")
            return 0
        weights = read_weights(args.source, format=args.format)
        n = save_converted(weights, args.output, target=args.target, keep_classifier=args.keep_classifier)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} tensors ({weights.format} format) to {args.output}")
    if weights.conventions is not None:
        print("conventions:", json.dumps(weights.conventions.as_dict()))
    else:
        print("conventions: not recorded in the source; set them in your config")
    return 0


if __name__ == "__main__":
    sys.exit(main())

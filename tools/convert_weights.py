#!/usr/bin/env python
"""Convert ResNet weights of any supported format into a file our builders and detectron2 both load.

Examples:
    python tools/convert_weights.py R-50.pkl R-50-converted.pth                  # MSRA caffe2 .pkl
    python tools/convert_weights.py resnet101.pth r101.pth --format torchvision  # torchvision file
    python tools/convert_weights.py torchvision://ResNet101_Weights.IMAGENET1K_V2 r101.pth
    python tools/convert_weights.py model_final.pth body.pth --target body       # detectron2 C4 layout

The output holds {"model": {...}, "__author__": "resnet_backbones", "conventions": {...}}; point
MODEL.WEIGHTS at it. The conventions (stride position, RGB/BGR, pixel mean/std) are printed, and the
configs' MODEL.RESNETS.STRIDE_IN_1X1, INPUT.FORMAT and MODEL.PIXEL_MEAN/STD must match them.
"""
import argparse
import json
import sys

from resnet_backbones.weights import FORMATS, WeightsError, read_weights, save_converted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="weight file or named source (torchvision://, detectron2://, timm://, https://)")
    parser.add_argument("output", help="output .pth")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--target", default="fpn", choices=("fpn", "body"),
                        help="name the body as in a detectron2 FPN model (backbone.bottom_up.*) or a C4 one (backbone.*)")
    parser.add_argument("--keep-classifier", action="store_true", help="also write the ImageNet classifier as linear.*")
    args = parser.parse_args(argv)
    try:
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

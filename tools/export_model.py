#!/usr/bin/env python
"""Export a trained detector to TorchScript or ONNX (FP32 or int8), optionally checked by COCO AP against the eager model.

    python tools/export_model.py --config quick_schedules/faster_rcnn_R18_synthetic.yaml \
        --format onnx --output export/ MODEL.WEIGHTS output/faster_rcnn_R18_synthetic/model_final.pth \
        --eval synthetic_shapes_val

MODEL.WEIGHTS is a checkpoint of either engine. ``--format onnx-int8 --calibrate N`` writes the ONNX graph
statically quantized to int8 by onnxruntime, its activation ranges calibrated on the first N images of
DATASETS.TRAIN. The output folder holds the model (model.ts, model.onnx or model_int8.onnx), the
config.yaml its wrapper reads and export.json (format, precision, calibration); run it with
``resnet_backbones.Predictor.from_export(folder)`` or ``resnet_backbones.export.ExportedDetector(folder)``
(the module docstring of resnet_backbones.export says what is inside the graph and what is not).
``--eval DATASET`` runs the exported model (TorchScript in torch, ONNX in onnxruntime) and the eager one
over DATASET and prints both COCO AP tables and their differences.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.errors import ConfigError, DatasetError, WeightsError  # noqa: E402
from resnet_backbones.export import FORMATS, ExportedDetector, export_detector  # noqa: E402
from resnet_backbones.predictor import dataset_class_names  # noqa: E402
from resnet_backbones.train_net import add_dataset_argument  # noqa: E402


def box_agreement(eager_results, exported_results):
    """How far the exported detections are from the eager ones: each eager detection paired with the
    exported detection of its image and class that overlaps it most (IoU >= 0.5). Returns (eager count,
    exported count, pairs, the largest coordinate difference of a pair in pixels)."""
    from collections import defaultdict

    from torchvision.ops import box_iou

    def grouped(results):
        groups = defaultdict(list)
        for r in results:
            x, y, w, h = r["bbox"]
            groups[(r["image_id"], r["category_id"])].append([x, y, x + w, y + h])
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in groups.items()}

    eager, other = grouped(eager_results), grouped(exported_results)
    pairs, largest = 0, 0.0
    for key, a in eager.items():
        b = other.get(key)
        if b is None:
            continue
        iou, best = box_iou(a, b).max(dim=1)
        matched = iou >= 0.5
        pairs += int(matched.sum())
        if matched.any():
            largest = max(largest, float((a[matched] - b[best[matched]]).abs().max()))
    return len(eager_results), len(exported_results), pairs, largest


def evaluate_both(cfg, eager, exported, dataset_name: str):
    """COCO AP of the eager and the exported model on ``dataset_name``, and :func:`box_agreement`:
    ({"eager": stats, "exported": stats}, agreement)."""
    from resnet_backbones.data import COCOInstances, get_dataset
    from resnet_backbones.tv.evaluate import coco_evaluate, inference_on_dataset

    dataset = COCOInstances(get_dataset(dataset_name, cfg), input_format=cfg.INPUT.FORMAT, with_masks=False)
    iou_types = ["bbox"] + (["segm"] if cfg.MODEL.MASK_ON else [])
    out, results = {}, {}
    for name, model in (("eager", eager), ("exported", exported)):
        results[name] = inference_on_dataset(model, dataset, torch.device("cpu"))
        out[name] = coco_evaluate(dataset, results[name], iou_types)
    return out, box_agreement(results["eager"], results["exported"])


def format_comparison(stats, fmt: str) -> str:
    from resnet_backbones.tv.evaluate import METRICS

    lines = [f"| task | metric | eager | {fmt} | difference |", "|---|---|---|---|---|"]
    for task, eager in stats["eager"].items():
        for metric in METRICS:
            value, other = eager[metric], stats["exported"][task][metric]
            lines.append(f"| {task} | {metric} | {value:.3f} | {other:.3f} | {other - value:+.3f} |")
    return "\n".join(lines)


def calibration_images(cfg, fmt: str, n):
    """The first ``n`` images of DATASETS.TRAIN[0] (as the exported wrapper takes them) for an int8 export, and
    where they came from; (None, None) for the FP32 formats, which take no --calibrate."""
    if fmt != "onnx-int8":
        if n is not None:
            raise ConfigError(f"--calibrate is for --format onnx-int8 (the {fmt} export is FP32): drop it")
        return None, None
    if n is None or n < 1:
        raise ConfigError("--format onnx-int8 needs --calibrate N, N >= 1: the number of DATASETS.TRAIN images "
                          "to calibrate the int8 ranges on (64 were measured on the main job)")
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("--calibrate reads DATASETS.TRAIN, which is empty: set DATASETS.TRAIN '(\"NAME\",)'")
    from resnet_backbones.data import COCOInstances, get_dataset

    name = cfg.DATASETS.TRAIN[0]
    dataset = COCOInstances(get_dataset(name, cfg), input_format=cfg.INPUT.FORMAT, with_masks=False)
    if n > len(dataset):
        raise ConfigError(f"--calibrate {n}: {name} has only {len(dataset)} images")
    return [dataset[i][0] for i in range(n)], f"the first {n} images of {name}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config", required=True)
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--output", required=True, help="folder for the exported model")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per run of the graph (fixed at export; the wrapper fills a last, shorter batch)")
    p.add_argument("--eval", metavar="DATASET", help="also evaluate the exported and the eager model on DATASET")
    p.add_argument("--calibrate", type=int, metavar="N",
                   help="onnx-int8: calibrate the int8 ranges on the first N images of DATASETS.TRAIN (e.g. 64)")
    add_dataset_argument(p)
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides (MODEL.WEIGHTS ...)")
    args = p.parse_intermixed_args(argv)
    from resnet_backbones.tv.model import build_model
    from resnet_backbones.weights.resolve import load_model_weights

    try:
        cfg = load_config(args.config, [*args.opts, "MODEL.DEVICE", "cpu"], use_detectron2=False, datasets=args.dataset)
        model = build_model(cfg).eval()
        if load_model_weights(model, cfg) != "detector":
            raise ConfigError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} is not a trained detector checkpoint: pass one "
                              "(e.g. OUTPUT_DIR/model_final.pth of a training run)")
        images, source = calibration_images(cfg, args.format, args.calibrate)
        path = export_detector(cfg, model, args.output, args.format, class_names=dataset_class_names(cfg),
                               batch_size=args.batch_size, calibration_images=images, calibration_source=source)
        print(f"exported {args.format} (batch size {args.batch_size}): {path}")
        if args.eval:
            from resnet_backbones.inference import inference_model

            # The eager model the export was made from: with OPTIMIZE_FOR_INFERENCE, the folded copy.
            stats, (n_eager, n_exported, pairs, largest) = evaluate_both(
                cfg, inference_model(cfg, model), ExportedDetector(args.output), args.eval)
            print(f"COCO AP on {args.eval}, eager against {args.format}:")
            print(format_comparison(stats, args.format))
            print(f"detections: eager {n_eager}, {args.format} {n_exported}; {pairs} paired (same image and class, "
                  f"IoU >= 0.5); largest box difference of a pair: {largest:.2e} px")
    except (ConfigError, WeightsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The ResNet paper's COCO detection table (He et al. 2016, Table 8: Faster R-CNN with VGG-16 against
ResNet-101 on COCO val) from your runs: VGG-16 runs and ResNet runs of the same recipe.

    python tools/paper_table.py output/faster_rcnn_VGG16 output/faster_rcnn_R101_C4
    python tools/paper_table.py output/vgg16_s{0,1,2} output/r50_c4_s{0,1,2}   # the CPU miniature, 3 seeds each

Each argument is a training run's OUTPUT_DIR (either engine): its ``config.yaml`` says which backbone it
is, and the last evaluation in its ``metrics.json`` gives bbox AP50 and AP (COCO's mAP@.5 and
mAP@[.5,.95], in percent). It prints the runs beside the paper's numbers, with the difference; with
several runs of a backbone (seeds), their mean and sample standard deviation. It refuses runs whose
recipes differ outside the backbone, its head and the random seed (schedule, image sizes, anchors, RPN,
ROI sampling, datasets), naming the keys; ``--allow-different-recipes`` prints them anyway, with the keys
listed. Runs not evaluated on COCO are labelled as what they are: not the paper's experiment.
Exit status 0, or 2 with an error.
"""
import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Tuple

import yaml

# He et al. 2016, Table 8: Faster R-CNN on COCO val (trained on COCO train), in percent.
PAPER = {"VGG-16": {"AP50": 41.5, "AP": 21.2}, "ResNet-101": {"AP50": 48.4, "AP": 27.2}}
COCO_VAL = ("coco_2014_minival", "coco_2014_val", "coco_2017_val", "coco_2014_minival_100", "coco_2017_val_100")
# Keys that make the backbone (and its per-RoI head) what it is, with the input convention of its weights
# (VGG-16: torchvision's RGB, mean/std; R-101: MSRA's BGR, mean only), or only name the run: the rest is the recipe.
BACKBONE_KEYS = ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "MODEL.BACKBONE.", "MODEL.RESNETS.",
                 "MODEL.RESNET_BACKBONES.VGG_", "MODEL.RESNET_BACKBONES.ZERO_INIT", "MODEL.ROI_HEADS.NAME",
                 "MODEL.ROI_HEADS.IN_FEATURES", "MODEL.RPN.IN_FEATURES", "MODEL.ROI_BOX_HEAD.",
                 "MODEL.ROI_MASK_HEAD.", "MODEL.WEIGHTS", "MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT", "MODEL.FPN.",
                 "OUTPUT_DIR", "SEED")


class RunError(Exception):
    pass


def _flatten(d, prefix="") -> Dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_run(folder: str) -> dict:
    """A run folder's config (flattened) and its last bbox evaluation."""
    config_path, metrics_path = os.path.join(folder, "config.yaml"), os.path.join(folder, "metrics.json")
    for path in (config_path, metrics_path):
        if not os.path.isfile(path):
            raise RunError(f"{path} not found: give the OUTPUT_DIR of a training run (tools/train_net.py writes "
                           "config.yaml at the start and metrics.json with each evaluation)")
    with open(config_path) as f:
        cfg = _flatten(yaml.safe_load(f) or {})
    last = None
    with open(metrics_path) as f:
        for line in f:
            line = line.strip()
            if line:
                record = json.loads(line)
                if "bbox/AP50" in record:
                    last = record
    if last is None:
        raise RunError(f"{metrics_path} has no bbox evaluation (no 'bbox/AP50'): the run did not finish, or "
                       "evaluated several datasets; evaluate its model_final.pth with --eval-only and one "
                       "DATASETS.TEST")
    return {"folder": folder, "cfg": cfg, "AP50": float(last["bbox/AP50"]), "AP": float(last["bbox/AP"]),
            "iteration": last.get("iteration")}


def is_vgg(cfg: Dict[str, object]) -> bool:
    return "vgg" in str(cfg.get("MODEL.BACKBONE.NAME", "")).lower()


def backbone_label(cfg: Dict[str, object]) -> str:
    if is_vgg(cfg):
        width = cfg.get("MODEL.RESNET_BACKBONES.VGG_CONV1_CHANNELS", 64)
        label = f"VGG-{cfg.get('MODEL.RESNET_BACKBONES.VGG_DEPTH', 16)}"
        return label if width == 64 else f"{label} ({width / 64:g} of its width)"
    depth = cfg.get("MODEL.RESNETS.DEPTH", 50)
    layout = ("C4" if cfg.get("MODEL.ROI_HEADS.NAME") == "Res5ROIHeads"
              else "DC5" if cfg.get("MODEL.RESNETS.RES5_DILATION", 1) == 2
              else "FPN" if "fpn" in str(cfg.get("MODEL.BACKBONE.NAME", "")).lower() else "body")
    label = f"ResNet-{depth} {layout}"
    width = cfg.get("MODEL.RESNETS.WIDTH_PER_GROUP", 64)
    groups = cfg.get("MODEL.RESNETS.NUM_GROUPS", 1)
    if groups == 1 and width != 64:
        label += f" ({width / 64:g} of its width)"
    return label


def recipe_differences(a: Dict[str, object], b: Dict[str, object]) -> List[Tuple[str, object, object]]:
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys
            if not k.startswith(BACKBONE_KEYS) and a.get(k) != b.get(k)]


def _summary(runs: List[dict], key: str) -> Tuple[float, str]:
    """The mean of ``key`` over the runs and its cell: the value, or ``mean ± sd`` over several runs."""
    values = [r[key] for r in runs]
    mean = statistics.fmean(values)
    return mean, f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {statistics.stdev(values):.1f}"


def table(vggs: List[dict], resnets: List[dict]) -> str:
    datasets = vggs[0]["cfg"].get("DATASETS.TEST", [])
    on_coco = bool(datasets) and all(str(d) in COCO_VAL for d in datasets)
    rows = [
        "| backbone | mAP@.5 | mAP@[.5,.95] | paper's backbone | paper mAP@.5 | paper mAP@[.5,.95] |",
        "|---|---|---|---|---|---|",
    ]
    means = {}
    for runs, paper in ((vggs, "VGG-16"), (resnets, "ResNet-101")):
        (m50, c50), (m, c) = _summary(runs, "AP50"), _summary(runs, "AP")
        means[paper] = (m50, m)
        label = backbone_label(runs[0]["cfg"]) + (f", {len(runs)} runs" if len(runs) > 1 else "")
        rows.append(f"| {label} | {c50} | {c} | {paper} | {PAPER[paper]['AP50']:.1f} | {PAPER[paper]['AP']:.1f} |")
    d50, d = means["ResNet-101"][0] - means["VGG-16"][0], means["ResNet-101"][1] - means["VGG-16"][1]
    p50 = PAPER["ResNet-101"]["AP50"] - PAPER["VGG-16"]["AP50"]
    p = PAPER["ResNet-101"]["AP"] - PAPER["VGG-16"]["AP"]
    rows.append(f"| difference{' of the means' if len(vggs) + len(resnets) > 2 else ''} | {d50:+.1f} | {d:+.1f} "
                f"| | {p50:+.1f} | {p:+.1f} |")
    rel = f"{100 * d / means['VGG-16'][1]:+.0f} %" if means["VGG-16"][1] > 0 else "n/a"
    rows.append(f"| relative (mAP@[.5,.95]) | | {rel} | | | {100 * p / PAPER['VGG-16']['AP']:+.0f} % |")
    head = ("He et al. 2016, Table 8 (Faster R-CNN, COCO val) beside these runs, evaluated on "
            f"{', '.join(map(str, datasets)) or 'DATASETS.TEST'}")
    if not on_coco:
        head += (". These runs are a miniature of the experiment, on other data and at another scale: "
                 "compare their difference with the paper's, not their numbers")
    if len(vggs) + len(resnets) > 2:
        head += ". Several runs of a backbone: mean ± sample standard deviation"
    lines = [head + ":", ""] + rows + [""]
    for run in vggs + resnets:
        lines.append(f"- {backbone_label(run['cfg'])}: {run['folder']} (SEED {run['cfg'].get('SEED')}, evaluated at "
                     f"iteration {run['iteration']}; AP50 {run['AP50']:.1f}, AP {run['AP']:.1f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="the OUTPUT_DIRs of VGG-16 runs and ResNet runs (any order; several of each: seeds)")
    p.add_argument("--allow-different-recipes", action="store_true",
                   help="print the table even if the recipes differ outside the backbone (the keys are listed)")
    args = p.parse_args(argv)
    try:
        runs = [read_run(folder) for folder in args.runs]
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vggs = [r for r in runs if is_vgg(r["cfg"])]
    resnets = [r for r in runs if not is_vgg(r["cfg"])]
    if not vggs or not resnets:
        print(f"error: need at least one VGG run (MODEL.BACKBONE.NAME build_resnet_backbones_vgg_backbone) and one "
              f"ResNet run; got {len(vggs)} VGG and {len(resnets)} ResNet run(s) in {args.runs}", file=sys.stderr)
        return 2
    for group in (vggs, resnets):
        labels = sorted({backbone_label(r["cfg"]) for r in group})
        if len(labels) > 1:
            print(f"error: the runs of one side are different backbones ({', '.join(labels)}): give the runs (seeds) "
                  "of one VGG and one ResNet", file=sys.stderr)
            return 2
    differences = []
    for other in runs[1:]:
        for k, a, b in recipe_differences(vggs[0]["cfg"], other["cfg"]):
            differences.append(f"{k}: {a!r} ({vggs[0]['folder']}) vs {b!r} ({other['folder']})")
    if differences:
        listed = "; ".join(differences)
        if not args.allow_different_recipes:
            print(f"error: the runs differ outside the backbone, so the table would not compare backbones: "
                  f"{listed}. Train them with the same recipe, or pass --allow-different-recipes", file=sys.stderr)
            return 2
        print(f"note: the recipes differ: {listed}\n")
    print(table(vggs, resnets))
    return 0


if __name__ == "__main__":
    sys.exit(main())

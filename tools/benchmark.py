#!/usr/bin/env python
"""Backbone and detector speed, side by side in one run (medians; ratios against a reference).

    python tools/benchmark.py                                   # R50-FPN, 800x1216, batch 1, CPU
    python tools/benchmark.py --depths 50 101 152 --device cuda --batch 2
    python tools/benchmark.py --modes inference --variants ours ours-opt ours-opt-bf16 --repeats 10

Variants (FrozenBN everywhere, FREEZE_AT 2, random weights: speed does not depend on values):
  d2               detectron2's build_resnet_fpn_backbone (when detectron2 is importable)
  torchvision      torchvision's resnet_fpn_backbone
  ours             build_resnet_fpn, plain
  ours-opt         inference: FrozenBN folded into the convs + channels_last; training: channels_last
  ours-opt-bf16    ours-opt under bf16 autocast (CPU) / fp16 autocast (CUDA)
  ours-compiled    inference only: ours-opt + torch.compile with inductor freezing (compile time is
                   spent in the warm-up run and not timed)
  ours-compiled-bf16  the same under bf16 / fp16 autocast
  ours-ckpt        training only: activation checkpointing per stage
Modes: inference (forward, no grad), train (forward + backward of the backbone), detector (a full
Faster R-CNN training step on a synthetic batch: torchvision engine, and detectron2 engine when importable).

Each measurement runs in a fresh process, so peak memory is its own: CUDA max_memory_allocated, or on
CPU the growth of the peak resident set over the model's footprint. The ratio column is the reference's
median time over the variant's (>1 = faster than the reference: detectron2 when importable, else
torchvision). GFLOP/s uses fvcore's FLOP count (one multiply-add = 2 FLOPs here) and is compared with
the FP32 and bf16 matmul peaks measured at the start of the same run.
"""
import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

VARIANTS = ("d2", "torchvision", "ours", "ours-opt", "ours-opt-bf16", "ours-compiled", "ours-compiled-bf16",
            "ours-ckpt")
MODES = ("inference", "train", "detector")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    # ru_maxrss survives fork+exec (a spawned child starts with its parent's peak): reset VmHWM.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _d2_available() -> bool:
    from resnet_backbones.d2 import detectron2_available

    return detectron2_available()


def build_backbone(variant: str, depth: int):
    """Returns (model, output name list); all variants FrozenBN with stages up to res2 frozen."""
    if variant == "d2":
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

        from resnet_backbones.config import load_config

        cfg = load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", ""],
                          use_detectron2=True)
        return build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    if variant == "torchvision":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        return resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=3)
    from resnet_backbones.modeling import build_resnet_fpn, set_activation_checkpointing

    model = build_resnet_fpn(depth=depth, norm="FrozenBN", freeze_at=2)
    if variant == "ours-ckpt":
        set_activation_checkpointing(model)
    return model


def _autocast(variant, device):
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=variant.endswith("bf16"))


def measure(variant: str, mode: str, depth: int, size, batch: int, device_name: str, repeats: int, warmup: int,
            threads: int, queue) -> None:
    """Child process: time ``repeats`` runs after ``warmup`` ones; report medians and peak memory."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notes from imports
    try:
        torch.set_num_threads(threads)
        device = torch.device(device_name)
        torch.manual_seed(0)
        if mode == "detector":
            step, n_params = _detector_step(variant, depth, size, batch, device)
        else:
            model = build_backbone(variant, depth).to(device)
            channels_last = variant.startswith(("ours-opt", "ours-compiled"))
            x = torch.randn(batch, 3, *size, device=device) * 50
            if mode == "inference":
                model.eval()
                if channels_last:
                    from resnet_backbones.modeling import optimize_for_inference

                    optimize_for_inference(model)
                if variant.startswith("ours-compiled"):
                    from resnet_backbones.modeling import compile_for_inference

                    model = compile_for_inference(model)
            else:
                model.train()
                if channels_last:
                    model.to(memory_format=torch.channels_last)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            n_params = sum(p.numel() for p in model.parameters())

            def step():
                if mode == "inference":
                    with torch.no_grad(), _autocast(variant, device):
                        model(x)
                else:
                    with _autocast(variant, device):
                        out = model(x)
                    sum(v.float().mean() for v in out.values()).backward()

        _sync(device)
        base_rss = _rss_bytes()
        if device.type == "cpu":
            _reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_cuda = torch.cuda.memory_allocated()
        for _ in range(warmup):
            step()
        _sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base_cuda
        else:
            peak = _peak_rss_bytes() - base_rss
        queue.put({"median_s": statistics.median(times), "times": times, "peak_mb": max(peak, 0) / 2**20,
                   "params": n_params})
    except Exception as e:  # reported in the table instead of killing the whole run
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _detector_step(engine: str, depth: int, size, batch: int, device):
    """One Faster R-CNN SGD step on a synthetic batch (3 boxes per image) for an engine."""
    from resnet_backbones.config import load_config

    overrides = ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", "", "MODEL.DEVICE", device.type,
                 "INPUT.MIN_SIZE_TRAIN", f"({min(size)},)", "INPUT.MAX_SIZE_TRAIN", str(max(size))]
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0], [100.0, 500.0, 260.0, 700.0]])
    images = [torch.rand(3, *size) * 255 for _ in range(batch)]
    if engine == "d2":
        from detectron2.modeling import build_model
        from detectron2.structures import Boxes, Instances

        import resnet_backbones  # noqa: F401  (registers our backbone)

        cfg = load_config("faster_rcnn_R50.yaml", overrides, use_detectron2=True)
        model = build_model(cfg).train()
        inputs = []
        for im in images:
            inst = Instances(tuple(size))
            inst.gt_boxes = Boxes(boxes.clone())
            inst.gt_classes = torch.tensor([1, 2, 3])
            inputs.append({"image": im.to(device), "instances": inst.to(device)})

        from detectron2.utils.events import EventStorage

        def forward():
            with EventStorage():  # detectron2's heads log into the current storage
                return model(inputs)
    else:
        from resnet_backbones.tv.model import build_model as tv_build

        cfg = load_config("faster_rcnn_R50.yaml", overrides, use_detectron2=False)
        model = tv_build(cfg).to(device).train()
        targets = [{"boxes": boxes.to(device), "labels": torch.tensor([2, 3, 4], device=device)} for _ in images]
        images = [im.to(device) for im in images]

        def forward():
            return model(images, targets)

    # Trained-looking FrozenBN statistics: with identity statistics a random-init R50 produces huge
    # activations and detectron2 stops on non-finite predictions.
    g = torch.Generator().manual_seed(0)
    for name, buf in model.backbone.named_buffers():
        if name.endswith("norm.weight"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.4 + 0.2)
        elif name.endswith("norm.running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 1.5 + 0.5)
        elif name.endswith(("norm.bias", "norm.running_mean")):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.2 - 0.1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step():
        losses = forward()
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    return step, sum(p.numel() for p in model.parameters())


def matmul_peak(device, dtype, n=2048, repeats=5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops(depth: int, size, batch: int) -> float:
    from fvcore.nn import FlopCountAnalysis

    from resnet_backbones.modeling import build_resnet_fpn

    model = build_resnet_fpn(depth=depth).eval()
    counter = FlopCountAnalysis(model, torch.randn(batch, 3, *size))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    return 2 * counter.total()  # fvcore counts one multiply-add as one


def run_isolated(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[50])
    p.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--json", help="also write every measurement to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    have_d2 = _d2_available()
    variants = [v for v in args.variants if v != "d2" or have_d2]
    reference = "d2" if have_d2 else "torchvision"
    peak32, peak16 = matmul_peak(device, torch.float32), matmul_peak(device, torch.bfloat16)
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; input "
          f"{args.batch}x3x{args.size[0]}x{args.size[1]}; {args.repeats} timed runs after {args.warmup} warm-up")
    print(f"matmul peak (2048^3, measured now): FP32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    print(f"ratio = {reference} median / variant median (>1: faster than {reference})\n")
    records = []
    for depth in args.depths:
        gflop = flops(depth, tuple(args.size), args.batch) / 1e9
        print(f"## R{depth}-FPN backbone: {gflop:.1f} GFLOP per forward (fvcore)\n")
        print("| mode | variant | median s | ratio | GFLOP/s | % of matmul peak | peak memory MB |")
        print("|---|---|---|---|---|---|---|")
        for mode in args.modes:
            names = ["tv-engine"] + (["d2"] if have_d2 else []) if mode == "detector" else \
                [v for v in variants if not (mode == "inference" and v == "ours-ckpt")
                 and not (mode == "train" and v.startswith("ours-compiled"))]
            results = {}
            for v in names:
                results[v] = run_isolated(v, mode, depth, tuple(args.size), args.batch, args.device, args.repeats,
                                          args.warmup, args.threads)
            ref_name = ("d2" if have_d2 else "tv-engine") if mode == "detector" else reference
            ref = results.get(ref_name, {}).get("median_s")
            for v, r in results.items():
                records.append({"depth": depth, "mode": mode, "variant": v, **r})
                if "error" in r:
                    print(f"| {mode} | {v} | error: {r['error']} | | | | |")
                    continue
                work = gflop * (3 if mode == "train" else 1)  # backward ~ 2x forward
                rate = work / r["median_s"] if mode != "detector" else float("nan")
                peak = peak16 if v.endswith("bf16") else peak32
                ratio = f"{ref / r['median_s']:.2f}" if ref else "n/a"
                rate_s = "" if mode == "detector" else f"{rate:.0f}"
                share = "" if mode == "detector" else f"{100 * rate / peak:.0f}%"
                print(f"| {mode} | {v} | {r['median_s']:.3f} | {ratio} | {rate_s} | {share} | {r['peak_mb']:.0f} |",
                      flush=True)
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "matmul_fp32": peak32, "matmul_bf16": peak16, "runs": records}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Backbone and detector speed, side by side in one run: one table, every row the same architecture.

    python tools/benchmark.py                                   # R50-FPN, 800x1216, batch 1, CPU
    python tools/benchmark.py --depths 50 101 152 --device cuda --batch 2
    python tools/benchmark.py --modes train --variants d2 ours ours-opt-amp --repeats 10

Like for like: every backbone row is ResNet-FPN with FrozenBN everywhere, stem and res2 frozen (FREEZE_AT
2), the same stride position (the 3x3 conv, torchvision's convention; ``--stride-in-1x1`` for MSRA's,
where torchvision's builder has no row), 256 FPN channels and a max-pooled p6, random weights (speed does
not depend on values). FLOPs are counted (fvcore) on each row's own model. Rows differ only in what the
table says: builder, dtype, memory format, compiled or not, checkpointing, FrozenBN folding.

Backbone variants (modes inference "inf" and train = forward + backward of the backbone):
  d2 / d2-amp        detectron2's build_resnet_fpn_backbone (when importable), FP32 / under autocast
  torchvision        torchvision's resnet_fpn_backbone (trainable_layers=3 == FREEZE_AT 2)
  ours               build_resnet_fpn with its defaults (training folds FrozenBN into the convs)
  ours-nofold        train: ours with that folding off (detectron2's arithmetic): the A/B of the folding
  ours-opt           inference: FrozenBN folded + channels_last; train: channels_last
  ours-opt-amp       ours-opt under autocast
  ours-compiled(-amp)  inference: ours-opt + torch.compile with inductor freezing (compiled in warm-up)
  ours-ckpt          train: activation checkpointing of every stage
  ours-ckpt-res34    train: activation checkpointing of res3 and res4 only
Detector variants (mode detector: one Faster R-CNN SGD step, synthetic batch, both engines built from
the same yaml, ``--detector-config``): d2-engine, d2-engine-amp, tv-engine, tv-engine-amp (AMP and
MODEL.RESNET_BACKBONES.CHANNELS_LAST).
Evaluation variants (mode detector-eval: what --eval-only does per image, ``--batch`` images one at a time
through the whole detector in eval mode, same yaml): d2-engine, tv-engine (FP32), tv-engine-opt
(MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE: batch norms folded, channels_last), tv-engine-opt-amp and
d2-engine-opt-amp (+ MODEL.RESNET_BACKBONES.INFERENCE_AMP).

Autocast ("amp") is fp16 on CUDA and bf16 on a CPU. A CPU without native bf16 (oneDNN's
``_is_mkldnn_bf16_supported()`` False) emulates it, hundreds of times slower than FP32: amp rows are
skipped there unless ``--emulated-bf16`` is given, and then labelled "bf16 (emulated)" without a share
of any peak. On CUDA, FP32 rows run cuDNN's default TF32 convolutions and are compared with a TF32
matmul peak.

Each measurement runs in a fresh process, so peak memory is its own: CUDA max_memory_allocated, or on
CPU the growth of the peak resident set over the built model (allocator caching makes it noisy). In
train mode "saved for backward" counts the tensors autograd keeps after the forward pass (the
activation memory; deterministic). The ratio column is the reference's
median time over the variant's (>1 = faster): detectron2's FP32 backbone when importable, else
torchvision's; for the detector mode the detectron2 engine's FP32 step (else the torchvision engine's).
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

# name: (modes, builder shown in the table, inference memory format / training memory format, compiled)
VARIANTS = {
    "d2": ("inference train", "detectron2 build_resnet_fpn_backbone"),
    "d2-amp": ("inference train", "detectron2 build_resnet_fpn_backbone"),
    "torchvision": ("inference train", "torchvision resnet_fpn_backbone"),
    "ours": ("inference train", "build_resnet_fpn"),
    "ours-nofold": ("train", "build_resnet_fpn, FrozenBN folding off"),
    "ours-opt": ("inference train", "build_resnet_fpn + optimize_for_inference (inf) / channels_last (train)"),
    "ours-opt-amp": ("inference train", "build_resnet_fpn + optimize_for_inference (inf) / channels_last (train)"),
    "ours-compiled": ("inference", "ours-opt + compile_for_inference"),
    "ours-compiled-amp": ("inference", "ours-opt + compile_for_inference"),
    "ours-ckpt": ("train", "build_resnet_fpn + activation checkpointing, every stage"),
    "ours-ckpt-res34": ("train", "build_resnet_fpn + activation checkpointing, res3 and res4"),
}
DETECTOR_VARIANTS = ("d2-engine", "d2-engine-amp", "tv-engine", "tv-engine-amp")
EVAL_VARIANTS = ("d2-engine", "tv-engine", "tv-engine-opt", "tv-engine-opt-amp", "d2-engine-opt-amp")
MODES = ("inference", "train", "detector", "detector-eval")


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


def half_dtype(device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def build_backbone(variant: str, depth: int, stride_in_1x1: bool):
    """The variant's ResNet-FPN: FrozenBN everywhere, stem and res2 frozen, the given stride position."""
    if variant.startswith("d2"):
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

        from resnet_backbones.config import load_config

        cfg = load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", "",
                                                   "MODEL.RESNETS.STRIDE_IN_1X1", str(stride_in_1x1),
                                                   "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2",
                                                   "MODEL.RESNETS.RES2_OUT_CHANNELS", "64" if depth < 50 else "256"],
                          use_detectron2=True)
        return build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    if variant == "torchvision":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        if stride_in_1x1:
            raise ValueError("torchvision's ResNet has no stride-in-1x1 option")
        return resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=3)
    from resnet_backbones.modeling import build_resnet_fpn, set_activation_checkpointing, set_frozen_bn_folding

    model = build_resnet_fpn(depth=depth, norm="FrozenBN", freeze_at=2, stride_in_1x1=stride_in_1x1)
    if variant == "ours-nofold":
        set_frozen_bn_folding(model, False)
    if variant == "ours-ckpt":
        set_activation_checkpointing(model)
    if variant == "ours-ckpt-res34":
        set_activation_checkpointing(model, stages=("res3", "res4"))
    return model


def saved_activations_mb(model, x, autocast) -> float:
    """MB of tensors autograd keeps for backward after one forward pass (each storage once; parameters and
    buffers excluded): the activation memory a training step holds at its peak, free of allocator noise.
    Inside a checkpointed region checkpointing's own hooks take over, so what it recomputes is not counted."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(x)
    del out
    return sum(seen.values()) / 2**20


def count_gflop(model, x) -> float:
    """fvcore's count on this row's own model (one multiply-add = 2 FLOPs here), forward only."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    counter = FlopCountAnalysis(model.eval(), x)
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = counter.total()
    model.train(was_training)
    return 2 * total / 1e9


def measure(variant: str, mode: str, depth: int, size, batch: int, device_name: str, repeats: int, warmup: int,
            threads: int, stride_in_1x1: bool, detector_config: str, queue) -> None:
    """Child process: time ``repeats`` runs after ``warmup`` ones; report medians and peak memory."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notes from imports
    try:
        torch.set_num_threads(threads)
        device = torch.device(device_name)
        amp = variant.endswith("-amp")
        autocast = torch.autocast(device.type, dtype=half_dtype(device), enabled=amp)
        torch.manual_seed(0)
        gflop = float("nan")
        first_loss = []
        saved_mb = float("nan")
        if mode == "detector":
            step, n_params, first_loss = _detector_step(variant, depth, size, batch, device, detector_config)
        elif mode == "detector-eval":
            step, n_params = _detector_eval(variant, depth, size, batch, device, detector_config)
        else:
            model = build_backbone(variant, depth, stride_in_1x1)
            x = torch.randn(batch, 3, *size) * 50
            gflop = count_gflop(model, x[:1]) * batch
            model = model.to(device)
            x = x.to(device)
            channels_last = variant.startswith(("ours-opt", "ours-compiled"))
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
            params = [p for p in model.parameters() if p.requires_grad]
            if mode == "train":
                saved_mb = saved_activations_mb(model, x, autocast)

            def step():
                if mode == "inference":
                    with torch.no_grad(), autocast:
                        model(x)
                else:
                    for p in params:
                        p.grad = None
                    with autocast:
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
                   "params": n_params, "gflop": gflop, "saved_mb": saved_mb, **({"first_loss": first_loss[0]} if first_loss else {})})
    except Exception as e:  # reported in the table instead of killing the whole run
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _build_detector(engine: str, depth: int, device, config: str, overrides):
    """(model, cfg) of ``config`` on an engine ("d2" or "tv"), random weights with trained-looking FrozenBN
    statistics (with identity statistics a random-init R50 produces huge activations and detectron2
    stops on non-finite predictions)."""
    from resnet_backbones.config import load_config

    overrides = ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", "", "MODEL.DEVICE", device.type, *overrides]
    if engine == "d2":
        from detectron2.modeling import build_model

        import resnet_backbones  # noqa: F401  (registers our backbone)

        cfg = load_config(config, overrides, use_detectron2=True)
        model = build_model(cfg)
    else:
        from resnet_backbones.tv.model import build_model

        cfg = load_config(config, overrides, use_detectron2=False)
        model = build_model(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    for name, buf in model.backbone.named_buffers():
        if name.endswith("norm.weight"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.4 + 0.2)
        elif name.endswith("norm.running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 1.5 + 0.5)
        elif name.endswith(("norm.bias", "norm.running_mean")):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.2 - 0.1)
    return model, cfg


def _detector_step(variant: str, depth: int, size, batch: int, device, config: str):
    """One Faster R-CNN SGD step on a synthetic batch (3 boxes per image) for an engine, from ``config``."""
    amp = variant.endswith("-amp")
    overrides = ["INPUT.MIN_SIZE_TRAIN", f"({min(size)},)", "INPUT.MAX_SIZE_TRAIN", str(max(size))]
    if variant == "tv-engine-amp":  # the torchvision engine's fast options: AMP and a channels_last backbone
        overrides += ["MODEL.RESNET_BACKBONES.CHANNELS_LAST", "True"]
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0], [100.0, 500.0, 260.0, 700.0]])
    images = [torch.rand(3, *size) * 255 for _ in range(batch)]
    model, _ = _build_detector(variant[:2], depth, device, config, overrides)
    model.train()
    if variant.startswith("d2"):
        from detectron2.structures import Boxes, Instances
        from detectron2.utils.events import EventStorage

        inputs = []
        for im in images:
            inst = Instances(tuple(size))
            inst.gt_boxes = Boxes(boxes.clone())
            inst.gt_classes = torch.tensor([1, 2, 3])
            inputs.append({"image": im.to(device), "instances": inst.to(device)})

        def forward():
            with EventStorage():  # detectron2's heads log into the current storage
                return model(inputs)
    else:
        targets = [{"boxes": boxes.to(device), "labels": torch.tensor([2, 3, 4], device=device)} for _ in images]

        def forward():
            return model(images, targets)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    first_loss = []

    def step():
        torch.manual_seed(0)  # the same sampling in every engine and dtype's first step
        with torch.autocast(device.type, dtype=half_dtype(device), enabled=amp):
            losses = forward()
        total = sum(losses.values())
        if not first_loss:
            first_loss.append(total.item())
        opt.zero_grad()
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()

    return step, sum(p.numel() for p in model.parameters()), first_loss


def _detector_eval(variant: str, depth: int, size, batch: int, device, config: str):
    """What --eval-only does per image, for ``batch`` images one at a time: preprocessing, backbone, RPN,
    box head and postprocessing, with the config's inference keys (as both engines' evaluation applies
    them: :func:`resnet_backbones.builders.inference_runner`)."""
    from resnet_backbones.builders import inference_runner

    overrides = ["INPUT.MIN_SIZE_TEST", str(min(size)), "INPUT.MAX_SIZE_TEST", str(max(size))]
    if "-opt" in variant:
        overrides += ["MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE", "True"]
    if variant.endswith("-amp"):
        overrides += ["MODEL.RESNET_BACKBONES.INFERENCE_AMP", "True"]
    model, cfg = _build_detector(variant[:2], depth, device, config, overrides)
    model.eval()
    runner = inference_runner(cfg, model, device)
    images = [(torch.rand(3, *size) * 255).to(device) for _ in range(batch)]
    inputs = [[{"image": im, "height": size[0], "width": size[1]}] if variant.startswith("d2") else [im]
              for im in images]

    def step():
        with torch.no_grad():
            for x in inputs:
                runner(x)

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


def run_isolated(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def describe(variant: str, mode: str, device, native_bf16: bool) -> tuple:
    """(builder, dtype, memory format, compiled) as the table shows them."""
    amp = variant.endswith("-amp")
    half = "fp16" if device.type == "cuda" else ("bf16" if native_bf16 else "bf16 (emulated)")
    full = "fp32 (TF32 convs)" if device.type == "cuda" else "fp32"
    dtype = f"{half} autocast" if amp else full
    if mode.startswith("detector"):
        engine = "detectron2 engine" if variant.startswith("d2") else "torchvision engine"
        if "-opt" in variant:
            engine += ", OPTIMIZE_FOR_INFERENCE"
        nhwc = variant == "tv-engine-amp" and mode == "detector" or "-opt" in variant
        return engine, dtype, "NHWC backbone" if nhwc else "NCHW", "no"
    fmt = "NHWC" if variant.startswith(("ours-opt", "ours-compiled")) else "NCHW"
    compiled = "yes" if variant.startswith("ours-compiled") else "no"
    return VARIANTS[variant][1], dtype, fmt, compiled


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
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="backbone variants (inference and train modes)")
    p.add_argument("--detector-variants", nargs="+", default=list(DETECTOR_VARIANTS), choices=DETECTOR_VARIANTS)
    p.add_argument("--eval-variants", nargs="+", default=list(EVAL_VARIANTS), choices=EVAL_VARIANTS)
    p.add_argument("--detector-config", default="faster_rcnn_R50.yaml",
                   help="the yaml both engines build in the detector mode (MODEL.RESNETS.DEPTH from --depths)")
    p.add_argument("--stride-in-1x1", action="store_true",
                   help="MSRA's stride position for every backbone row (torchvision's builder has none)")
    p.add_argument("--emulated-bf16", action="store_true",
                   help="run the bf16 rows on a CPU without native bf16 too (labelled, no peak share)")
    p.add_argument("--json", help="also write every measurement to this file")
    args = p.parse_args(argv)

    from resnet_backbones.solver import cpu_supports_bf16

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    have_d2 = _d2_available()
    native_bf16 = device.type == "cuda" or cpu_supports_bf16()
    skip_amp = device.type == "cpu" and not native_bf16 and not args.emulated_bf16

    def wanted(v):
        if v.startswith("d2") and not have_d2:
            return False
        if v == "torchvision" and args.stride_in_1x1:
            return False
        return not (v.endswith("-amp") and skip_amp)

    variants = [v for v in args.variants if wanted(v)]
    detector_variants = [v for v in args.detector_variants if wanted(v)]
    eval_variants = [v for v in args.eval_variants if wanted(v)]
    reference = "d2" if have_d2 else "torchvision"
    det_reference = "d2-engine" if have_d2 else "tv-engine"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32  # the convs' precision
    peak32 = matmul_peak(device, torch.float32)
    peak16 = matmul_peak(device, half_dtype(device)) if native_bf16 else None
    cpu = ""
    if device.type == "cpu":
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"device: {device} ({name}; {torch.get_num_threads()} threads), torch {torch.__version__}; input "
          f"{args.batch}x3x{args.size[0]}x{args.size[1]}; {args.repeats} timed runs after {args.warmup} warm-up")
    if device.type == "cpu":
        print("native bf16 on this CPU: " + ("yes" if native_bf16 else
              "NO (bf16 is emulated, far slower than FP32: " +
              ("amp rows labelled emulated)" if args.emulated_bf16 else "amp rows skipped; --emulated-bf16 runs them)")))
    half_name = "fp16" if device.type == "cuda" else "bf16"
    print(f"matmul peak (2048^3, measured now): {'TF32' if device.type == 'cuda' else 'FP32'} {peak32:.0f} GFLOP/s"
          + (f", {half_name} {peak16:.0f} GFLOP/s" if peak16 else f", {half_name} not measured (emulated)"))
    print(f"architecture of every backbone row: ResNet-FPN, FrozenBN, FREEZE_AT 2, stride in the "
          f"{'1x1 (MSRA)' if args.stride_in_1x1 else '3x3 (torchvision)'}; detector rows: {args.detector_config}")
    print(f"ratio = reference median / row median (>1: faster); reference: {reference} (backbone), "
          f"{det_reference} (detector)\n")
    records = []
    for depth in args.depths:
        print(f"## R{depth}-FPN\n")
        print("| mode | variant | builder | dtype | memory format | compiled | GFLOP (fwd) | median s | ratio "
              "| GFLOP/s | % of matmul peak | peak memory MB | saved for backward MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for mode in args.modes:
            names = detector_variants if mode == "detector" else eval_variants if mode == "detector-eval" else \
                [v for v in variants if mode in VARIANTS[v][0].split()]
            results = {}
            for v in names:
                results[v] = run_isolated(v, mode, depth, tuple(args.size), args.batch, args.device, args.repeats,
                                          args.warmup, args.threads, args.stride_in_1x1, args.detector_config)
            ref = results.get(det_reference if mode.startswith("detector") else reference, {}).get("median_s")
            for v, r in results.items():
                records.append({"depth": depth, "mode": mode, "variant": v,
                                **dict(zip(("builder", "dtype", "memory_format", "compiled"),
                                           describe(v, mode, device, native_bf16))), **r})
                builder, dtype, fmt, compiled = describe(v, mode, device, native_bf16)
                if "error" in r:
                    print(f"| {mode} | {v} | {builder} | {dtype} | {fmt} | {compiled} | error: {r['error']} "
                          "| | | | | | |")
                    continue
                ratio = f"{ref / r['median_s']:.2f}" if ref else "n/a"
                gflop = r["gflop"]
                if mode == "detector-eval":
                    rate_s, share, gflop_s = f"{args.batch / r['median_s']:.2f} img/s", "", ""
                elif mode == "detector":
                    rate_s = share = ""
                    gflop_s = f"first loss {r['first_loss']:.4f}"
                else:
                    work = gflop * (3 if mode == "train" else 1)  # backward ~ 2x forward
                    rate = work / r["median_s"]
                    rate_s = f"{rate:.0f}"
                    peak = peak16 if v.endswith("-amp") else peak32
                    share = f"{100 * rate / peak:.0f}%" if peak else ""
                    gflop_s = f"{gflop:.1f}"
                print(f"| {mode} | {v} | {builder} | {dtype} | {fmt} | {compiled} | {gflop_s} | "
                      f"{r['median_s']:.3f} | {ratio} | {rate_s} | {share} | {r['peak_mb']:.0f} | "
                      f"{'' if r['saved_mb'] != r['saved_mb'] else round(r['saved_mb'])} |", flush=True)
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "device_name": name, "native_bf16": native_bf16,
                       "matmul_fp32": peak32, "matmul_half": peak16, "stride_in_1x1": args.stride_in_1x1,
                       "runs": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Backbone and detector speed, side by side in one run: one table, every row the same architecture.

    python tools/benchmark.py                                   # R50-FPN, 800x1216, batch 1, CPU
    python tools/benchmark.py --depths 50 101 152 --device cuda --batch 2
    python tools/benchmark.py --modes train --variants d2 ours ours-opt-amp --repeats 10
    python tools/benchmark.py --depths 18 --size 128 160 --batch 8 --modes detector detector-eval \
        --detector-config quick_schedules/faster_rcnn_R18_synthetic.yaml --profile   # where a step's time goes
    python tools/benchmark.py --record ...     # and append the run to tools/benchmark_results.md

``--record`` appends what the run printed to ``tools/benchmark_results.md`` (beside this tool) under a
heading with the date, the commit (``-dirty`` when the package, tools or configs have uncommitted
changes), the CPU kind and the command: that file is this tool's output, never edited by hand, and the
README's performance figures come from it.

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
Evaluation variants (mode detector-eval: what --eval-only does, ``--batch`` images in one call through the
whole detector in eval mode, same yaml; GFLOP counted once, on the exported graph, for every row):
d2-engine, tv-engine (FP32), tv-engine-opt (MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE: batch norms
folded, channels_last), tv-engine-opt-amp and d2-engine-opt-amp (+ MODEL.RESNET_BACKBONES.INFERENCE_AMP),
tv-export-torchscript and tv-export-onnx (the OPTIMIZE_FOR_INFERENCE model exported by
resnet_backbones.export for ``--batch`` images per graph, run by its wrapper: TorchScript in torch, ONNX in
onnxruntime, which needs the [export] extra; CPU only).

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
Beside the median, each row prints its runs' spread (fastest–slowest) and the ratio's range over every
pairing of the reference's runs with the row's: a range that holds 1.00 is no difference measured.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# Each row runs in a spawned interpreter, which imports the package (and torch.jit's deprecation notes)
# before any code of ours runs: silence those there through the environment it inherits.
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

import torch  # noqa: E402

from resnet_backbones.benchmark import (DETECTOR_VARIANTS, EVAL_VARIANTS, MODES, VARIANTS, cpu_info,  # noqa: E402
                                        cpu_kind, describe, describe_cpu, detector_eval_gflop, half_dtype,
                                        int8_matmul_peak, matmul_peak, run_isolated)
from resnet_backbones.benchmark.machine import checkout_commit  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_results.md")
_RESULTS_HEAD = ("# Benchmark results\n\nWritten by `tools/benchmark.py --record`, one section per run, newest "
                 "last; not edited by hand. Each section names its date, commit, CPU kind and command.\n")


class _Tee(io.TextIOBase):
    """stdout, also kept in a buffer for ``--record``."""

    def __init__(self, stream):
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text):
        self.buffer.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def _commit() -> str:
    return checkout_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           records=["tools/benchmark_results.md"])


def record(output: str, argv, device: torch.device, kind: str, path: str = RESULTS) -> None:
    """Append one run's output to ``path`` under a heading: date (UTC), commit, CPU kind, command."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else kind
    command = "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    head = "" if os.path.exists(path) else _RESULTS_HEAD
    lines, body = output.rstrip().splitlines(), []
    preamble = True
    for line in lines:  # the run's own headings one level down; its header lines as a list
        if line.startswith("#"):
            preamble = False
            line = "#" + line
        elif preamble and line.strip():
            line = "- " + line
        body.append(line)
    with open(path, "a") as f:
        f.write(f"{head}\n## {when} · commit {_commit()} · {machine}\n\n`{command}`\n\n" + "\n".join(body) + "\n")
    print(f"recorded in {path}")


def _d2_available() -> bool:
    from resnet_backbones.d2 import detectron2_available

    return detectron2_available()


def _print_profiles(records) -> None:
    """--profile: per row, the step's time per module (forward passes) and the most expensive ops."""
    for r in records:
        prof = r["profile"]
        step = prof["step_ms"]
        print(f"### profile: {r['mode']} {r['variant']} ({r['dtype']}): {step:.0f} ms per step under the profiler\n")
        print("| part | ms per step | share |")
        print("|---|---|---|")
        for label, ms in prof["sections"].items():
            print(f"| {label} | {ms:.0f} | {100 * ms / step:.0f}% |")
        print("\n| op (self time) | ms per step | share | calls per step |")
        print("|---|---|---|---|")
        for op in prof["ops"]:
            print(f"| {op['op']} | {op['self_ms']:.1f} | {100 * op['self_ms'] / step:.1f}% | {op['calls']:.0f} |")
        print()


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
    p.add_argument("--profile", action="store_true",
                   help="detector modes: also profile each row (torch.profiler; per module and per op, after the table)")
    p.add_argument("--json", help="also write every measurement to this file")
    p.add_argument("--record", nargs="?", const=RESULTS, metavar="FILE",
                   help="append this run's output, under a heading with date, commit, CPU kind and command, to "
                        "FILE (default: tools/benchmark_results.md)")
    args = p.parse_args(argv)
    if not args.record:
        return _run(args)
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = _run(args)
    device = torch.device(args.device)
    record(tee.buffer.getvalue(), sys.argv[1:] if argv is None else argv, device, cpu_kind(cpu_info()), args.record)
    return status


def _run(args) -> int:
    from resnet_backbones.precision import cpu_supports_bf16

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
    peak8 = int8_matmul_peak() if any(v.endswith("-int8") for v in eval_variants) else None
    cpu = cpu_info()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu["name"]
    print(f"device: {device} ({name}; {torch.get_num_threads()} threads), torch {torch.__version__}; input "
          f"{args.batch}x3x{args.size[0]}x{args.size[1]}; {args.repeats} timed runs after {args.warmup} warm-up")
    print(f"CPU: {describe_cpu(cpu)}")
    if device.type == "cpu":
        print("native bf16 on this CPU: " + ("yes" if native_bf16 else
              "NO (bf16 is emulated, far slower than FP32: " +
              ("amp rows labelled emulated)" if args.emulated_bf16 else "amp rows skipped; --emulated-bf16 runs them)")))
    half_name = "fp16" if device.type == "cuda" else "bf16"
    print(f"matmul peak (2048^3, measured now): {'TF32' if device.type == 'cuda' else 'FP32'} {peak32:.0f} GFLOP/s"
          + (f", {half_name} {peak16:.0f} GFLOP/s" if peak16 else f", {half_name} not measured (emulated)")
          + (f", int8 {peak8:.0f} GOP/s (onnxruntime MatMulInteger, u8 x s8)" if peak8 else ""))
    print(f"architecture of every backbone row: ResNet-FPN, FrozenBN, FREEZE_AT 2, stride in the "
          f"{'1x1 (MSRA)' if args.stride_in_1x1 else '3x3 (torchvision)'}; detector rows: {args.detector_config}")
    print(f"ratio = reference median / row median (>1: faster); ratio range: the reference's fastest and slowest "
          f"runs over this row's slowest and fastest (holding 1.00: no difference measured); reference: "
          f"{reference} (backbone), {det_reference} (detector)\n")
    records = []
    for depth in args.depths:
        print(f"## R{depth}-FPN\n")
        print("| mode | variant | builder | dtype | memory format | compiled | GFLOP (fwd) | median s | min–max s "
              "| ratio | ratio range | GFLOP/s | % of matmul peak | peak memory MB | saved for backward MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for mode in args.modes:
            names = detector_variants if mode == "detector" else eval_variants if mode == "detector-eval" else \
                [v for v in variants if mode in VARIANTS[v][0].split()]
            results = {}
            eval_gflop = float("nan")
            if mode == "detector-eval" and names:
                eval_gflop = detector_eval_gflop(depth, tuple(args.size), args.detector_config) * args.batch
            for v in names:
                results[v] = run_isolated(v, mode, depth, tuple(args.size), args.batch, args.device, args.repeats,
                                          args.warmup, args.threads, args.stride_in_1x1, args.detector_config,
                                          profile=args.profile)
            ref_run = results.get(det_reference if mode.startswith("detector") else reference, {})
            ref, ref_times = ref_run.get("median_s"), ref_run.get("times")
            for v, r in results.items():
                if mode == "detector-eval" and "error" not in r:
                    r["gflop"] = eval_gflop
                records.append({"depth": depth, "mode": mode, "variant": v,
                                **dict(zip(("builder", "dtype", "memory_format", "compiled"),
                                           describe(v, mode, device, native_bf16))), **r})
                builder, dtype, fmt, compiled = describe(v, mode, device, native_bf16)
                if "error" in r:
                    print(f"| {mode} | {v} | {builder} | {dtype} | {fmt} | {compiled} | error: {r['error']} "
                          "| | | | | | | | |")
                    continue
                ratio = f"{ref / r['median_s']:.2f}" if ref else "n/a"
                times = r["times"]
                spread = f"{min(times):.3f}–{max(times):.3f}"
                # Every pairing of the reference's runs with this row's: a range that holds 1.00 is no
                # difference measured (the README quotes only ratios whose range does not).
                ratio_range = (f"{min(ref_times) / max(times):.2f}–{max(ref_times) / min(times):.2f}"
                               if ref_times else "n/a")
                gflop = r["gflop"]
                if mode == "detector-eval":
                    # The detector's arithmetic against the matmul peak: how far any variant could still go.
                    peak = peak16 if v.endswith("-amp") else peak8 if v.endswith("-int8") else peak32
                    rate = eval_gflop / r["median_s"]
                    rate_s = f"{rate:.0f} ({args.batch / r['median_s']:.2f} img/s)"
                    share = f"{100 * rate / peak:.0f}%" if peak else ""
                    gflop_s = f"{eval_gflop:.1f}"
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
                      f"{r['median_s']:.3f} | {spread} | {ratio} | {ratio_range} | {rate_s} | {share} | {r['peak_mb']:.0f} | "
                      f"{'' if r['saved_mb'] != r['saved_mb'] else round(r['saved_mb'])} |", flush=True)
        print()
        _print_profiles([r for r in records if r["depth"] == depth and "profile" in r])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "device_name": name, "native_bf16": native_bf16, "cpu": cpu,
                       "matmul_fp32": peak32, "matmul_half": peak16, "matmul_int8": peak8,
                       "stride_in_1x1": args.stride_in_1x1, "runs": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The degradation check of He et al. 2016 (section 4.1, Table 2 and Figure 4) in miniature: plain-18,
plain-34, ResNet-18 and ResNet-34 pretrained with the same budget on the same classification set, their
training and validation top-1 error curves drawn in one PNG (thin: training, bold: validation centre
crops, as the paper's Figure 4) and their final errors in a table.

    python tools/degradation_check.py --iters 600 --jobs 2 --output output/degradation
    python tools/degradation_check.py --data /data/imagenet --config pretrain/R-18.yaml --iters 450450

Each run is ``tools/pretrain_net.py --config <config>`` (default ``pretrain/R-18_synthetic.yaml``, the embedded
16-class set) with only the depth, the shortcuts and the schedule changed: ``MODEL.RESNETS.DEPTH`` 18 or 34,
``MODEL.RESNET_BACKBONES.SHORTCUTS`` False (the plain nets: the same layers without the identity shortcuts) or
True, ``ZERO_INIT_RESIDUAL False`` for all four (the paper's initialisation; a plain net has no residual branch
to zero), ``SOLVER.MAX_ITER`` N with the LR divided by 10 at 2/3 and 9/10 of it, an evaluation every N/6.
Runs that finished (their folder's metrics.json has the final evaluation) are reused, so an interrupted check
continues where it stopped. Writes ``degradation.png``, ``degradation.md`` (the table, with the machine and
the command) and ``degradation.json`` into ``--output``. Needs matplotlib (``pip install matplotlib``).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = [("plain-18", 18, False), ("plain-34", 34, False), ("ResNet-18", 18, True), ("ResNet-34", 34, True)]
# He et al. 2016, Table 2: ImageNet top-1 error (%), 10-crop testing.
PAPER_TOP1_ERROR = {"plain-18": 27.94, "plain-34": 28.54, "ResNet-18": 27.88, "ResNet-34": 25.03}


def read_curves(metrics_path: str):
    """(training [(iteration, window median top-1 error %)], validation [(iteration, top-1 error %)])."""
    train, val = [], []
    with open(metrics_path) as f:
        for line in f:
            record = json.loads(line)
            if "top1_error_train" in record:
                train.append((record["iteration"], record["top1_error_train"]))
            if "classification/top1_error" in record:
                val.append((record["iteration"], record["classification/top1_error"]))
    return train, val


def finished(folder: str, iters: int) -> bool:
    path = os.path.join(folder, "metrics.json")
    return os.path.isfile(path) and any(i == iters for i, _ in read_curves(path)[1])


def run_one(args, name: str, depth: int, shortcuts: bool, threads: int) -> float:
    folder = os.path.join(args.output, name)
    if finished(folder, args.iters):
        print(f"degradation check: {name}: reusing the finished run in {folder}", flush=True)
        return 0.0
    steps = f"({round(args.iters * 2 / 3)},{round(args.iters * 0.9)})"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "pretrain_net.py"), "--config", args.config]
    if args.data:
        cmd += ["--data", args.data]
    if os.path.isfile(os.path.join(folder, "last_checkpoint")):
        cmd.append("--resume")  # an interrupted run continues from its last checkpoint
    eval_period = args.eval_period or max(1, args.iters // 6)
    cmd += ["OUTPUT_DIR", folder, "MODEL.RESNETS.DEPTH", str(depth),
            "MODEL.RESNET_BACKBONES.SHORTCUTS", str(shortcuts), "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "False",
            "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", steps, "TEST.EVAL_PERIOD", str(eval_period),
            "SOLVER.CHECKPOINT_PERIOD", str(eval_period), "SEED", str(args.seed), *args.opts]
    os.makedirs(folder, exist_ok=True)
    print(f"degradation check: {name}: {' '.join(cmd)} (log: {folder}/stdout.txt)", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    start = time.perf_counter()
    with open(os.path.join(folder, "stdout.txt"), "a") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"degradation check: {name} failed (exit status {rc}); its log: {folder}/stdout.txt. "
                         "Run the same command again to continue from its last checkpoint.")
    seconds = time.perf_counter() - start
    print(f"degradation check: {name}: done in {seconds / 60:.1f} min", flush=True)
    return seconds


def draw(args, curves) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("degradation check: drawing the curves needs matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = {18: "tab:red", 34: "tab:blue"}
    for ax, shortcuts, title in ((axes[0], False, "plain"), (axes[1], True, "ResNet")):
        for name, depth, s in NETS:
            if s != shortcuts:
                continue
            train, val = curves[name]
            ax.plot(*zip(*train), color=colours[depth], linewidth=0.8, alpha=0.8, label=f"{name} train")
            ax.plot(*zip(*val), color=colours[depth], linewidth=2.5, marker="o", markersize=3, label=f"{name} val")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("top-1 error (%)")
    fig.suptitle(f"{args.config}: {args.iters} iterations, seed {args.seed} "
                 "(thin: training crops, window median; bold: validation centre crops)", fontsize=9)
    fig.tight_layout()
    path = os.path.join(args.output, "degradation.png")
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pretrain/R-18_synthetic.yaml", help="a pretraining config of a ResNet-18 body")
    p.add_argument("--data", default="", help="an ImageFolder root (train/, val/) instead of the config's dataset")
    p.add_argument("--iters", type=int, default=600, help="SOLVER.MAX_ITER of every run (the same budget)")
    p.add_argument("--eval-period", type=int, default=0, help="iterations between evaluations (default: iters/6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (2 on a 2-core CPU: one thread each)")
    p.add_argument("--output", default="output/degradation")
    p.add_argument("opts", nargs="*", help="more config overrides for every run: KEY VALUE pairs")
    args = p.parse_args()
    if args.iters < 6:
        p.error("--iters must be at least 6")
    os.makedirs(args.output, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        # ResNet-34 and plain-34 first: the longest runs start before the short ones.
        order = sorted(NETS, key=lambda n: -n[1])
        seconds = dict(zip([n for n, _, _ in order],
                           pool.map(lambda n: run_one(args, *n, threads), order)))
    curves = {name: read_curves(os.path.join(args.output, name, "metrics.json")) for name, _, _ in NETS}
    png = draw(args, curves)
    rows = []
    for name, depth, shortcuts in NETS:
        train, val = curves[name]
        rows.append({"net": name, "depth": depth, "shortcuts": shortcuts, "train_top1_error": train[-1][1],
                     "val_top1_error": val[-1][1], "best_val_top1_error": min(e for _, e in val),
                     "paper_imagenet_top1_error": PAPER_TOP1_ERROR[name], "minutes": round(seconds[name] / 60, 1)})
    sys.path.insert(0, ROOT)
    from resnet_backbones.benchmark.machine import cpu_info

    cpu = cpu_info()["name"]
    lines = [f"Measured {datetime.date.today()} on {cpu} ({os.cpu_count()} CPUs), `tools/degradation_check.py "
             f"{' '.join(sys.argv[1:])}`: {args.config}, {args.iters} iterations per net, seed {args.seed}.", "",
             "| net | training top-1 error (%) | validation top-1 error (%) | best validation | "
             "paper, ImageNet (Table 2) | minutes |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['train_top1_error']:.1f} | {r['val_top1_error']:.1f} | "
                     f"{r['best_val_top1_error']:.1f} | {r['paper_imagenet_top1_error']:.2f} | "
                     f"{r['minutes'] if r['minutes'] else 'reused'} |")
    lines += ["", "Training error: the median of the last logged window of training batches (augmented crops); "
              "validation: the centre crop of every val image."]
    with open(os.path.join(args.output, "degradation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.output, "degradation.json"), "w") as f:
        json.dump({"config": args.config, "iters": args.iters, "seed": args.seed, "cpu": cpu, "rows": rows}, f, indent=1)
    print("\n".join(lines))
    print(f"degradation check: {png}, degradation.md and degradation.json in {args.output} "
          f"({(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()

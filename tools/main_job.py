#!/usr/bin/env python
"""The README's main job, measured: runs it as the README's first command does (``tools/train_net.py --config
quick_schedules/faster_rcnn_R18_synthetic.yaml``, the engine ``auto`` picks, the CPU's default threads) in a
fresh output folder, and prints what it took and the AP it printed.

    python tools/main_job.py                    # measure and print
    python tools/main_job.py --record           # and append the row to tools/main_job_results.md
    python tools/main_job.py --update-readme    # only rewrite the README's table from the records

``--record`` appends one row (date, commit, CPU, CPU kind, engine, precision, threads, seconds per iteration,
the command's wall time, bbox AP / AP50 / AP75) to ``tools/main_job_results.md``, beside this tool: that file
is this tool's output, never edited by hand. ``--update-readme`` (implied by ``--record``) rewrites the table
between ``<!-- main-job-table -->`` and ``<!-- /main-job-table -->`` in README.md from every record: one row
per CPU kind, engine and precision, with the range over its runs. tests/test_docs.py checks that the
README's table is the one these records give.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
RESULTS = os.path.join(ROOT, "tools", "main_job_results.md")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- main-job-table -->", "<!-- /main-job-table -->"
COLUMNS = ["date", "commit", "CPU", "CPU kind", "engine", "precision", "threads", "s/it", "wall s", "AP", "AP50", "AP75"]
_HEAD = ("# The main job, measured\n\nWritten by `tools/main_job.py --record`, one row per run of the README's main "
         "job (`tools/train_net.py --config " + CONFIG + "`, from a fresh output folder), newest last; not edited "
         "by hand. `s/it`: the median of the progress lines' seconds per iteration; `wall s`: the whole command "
         "(dataset check, 300 iterations, evaluation). The README's table is made from these rows.\n\n"
         "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n")


def measure(engine: str, output: str) -> Dict[str, object]:
    """Run the main job into ``output`` (emptied first) and return its row."""
    from resnet_backbones import precision
    from resnet_backbones.benchmark.machine import cpu_info, cpu_kind

    if os.path.isdir(output):
        shutil.rmtree(output)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config", CONFIG, "--engine", engine,
           "OUTPUT_DIR", output]
    print("main job:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"main job: the command failed (exit status {proc.returncode}):\n{proc.stdout[-4000:]}")
    ran = re.search(r"^engine: (\w+)", proc.stdout, re.M)
    records = [json.loads(line) for line in open(os.path.join(output, "metrics.json"))]
    times = [r["time"] for r in records if "time" in r]
    final = [r for r in records if "bbox/AP" in r][-1]
    info = cpu_info()
    import torch

    return OrderedDict([
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")), ("commit", _commit()),
        ("CPU", info["name"]), ("CPU kind", cpu_kind(info)), ("engine", ran.group(1) if ran else engine),
        # The trainers' rule (SOLVER.AMP.ENABLED is True in this config): bf16 autocast where oneDNN has native bf16.
        ("precision", "bf16 autocast" if precision.cpu_supports_bf16() else "FP32"),
        ("threads", str(torch.get_num_threads())), ("s/it", f"{statistics.median(times):.3f}"),
        ("wall s", f"{wall:.0f}"), ("AP", f"{final['bbox/AP']:.1f}"), ("AP50", f"{final['bbox/AP50']:.1f}"),
        ("AP75", f"{final['bbox/AP75']:.1f}")])


def _commit() -> str:
    from resnet_backbones.benchmark.machine import checkout_commit

    return checkout_commit(ROOT, records=["tools/main_job_results.md", "tools/benchmark_results.md"])


def read_records(path: str = RESULTS) -> List[Dict[str, str]]:
    if not os.path.isfile(path):
        return []
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(COLUMNS) and cells[0][:1].isdigit():
            rows.append(dict(zip(COLUMNS, cells)))
    return rows


def append_record(row: Dict[str, object], path: str = RESULTS) -> None:
    head = "" if os.path.exists(path) else _HEAD
    with open(path, "a") as f:
        f.write(head + "| " + " | ".join(str(row[c]) for c in COLUMNS) + " |\n")


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


def render_table(records: Sequence[Dict[str, str]]) -> str:
    """The README's table: one row per (CPU kind, engine, precision), ranges over its runs."""
    groups: "OrderedDict[tuple, List[Dict[str, str]]]" = OrderedDict()
    for r in records:
        groups.setdefault((r["CPU kind"], r["engine"], r["precision"]), []).append(r)
    lines = ["| CPU kind (2 cores) | engine | precision | runs | s/it | the command | bbox AP | AP50 | AP75 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (kind, engine, prec), rows in groups.items():
        wall = [float(r["wall s"]) for r in rows]
        wall_text = _minutes(min(wall)) if len(set(wall)) == 1 else f"{_minutes(min(wall))}–{_minutes(max(wall))}"
        lines.append(f"| {kind} | {engine} | {prec} | {len(rows)} | {_span([float(r['s/it']) for r in rows], '{:.2f}')} | "
                     f"{wall_text} | " + " | ".join(_span([float(r[m]) for r in rows], "{:.1f}")
                                                   for m in ("AP", "AP50", "AP75")) + " |")
    return "\n".join(lines)


def readme_block(readme: str = README) -> str:
    text = open(readme).read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"main job: {readme} has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def update_readme(records, readme: str = README) -> None:
    text = open(readme).read()
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    with open(readme, "w") as f:
        f.write(f"{before}{BEGIN}\n{render_table(records)}\n{END}{after}")
    print(f"main job: README.md's table rewritten from {len(records)} record(s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="auto", choices=["auto", "torchvision", "detectron2"])
    p.add_argument("--output", default=os.path.join(ROOT, "output", "main_job_measured"),
                   help="the run's OUTPUT_DIR (emptied first)")
    p.add_argument("--record", action="store_true", help=f"append the row to {os.path.relpath(RESULTS, ROOT)} and "
                                                         "rewrite the README's table")
    p.add_argument("--update-readme", action="store_true", help="only rewrite the README's table from the records")
    args = p.parse_args()
    if not args.update_readme:
        row = measure(args.engine, args.output)
        print("| " + " | ".join(COLUMNS) + " |")
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
        if not args.record:
            return
        append_record(row)
        print(f"main job: recorded in {RESULTS}")
    update_readme(read_records())


if __name__ == "__main__":
    main()

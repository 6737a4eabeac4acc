"""tools/benchmark.py runs its rows in spawned processes and says which CPU kind its figures are from."""
import json
import os
import subprocess
import sys

import pytest

from resnet_backbones.benchmark import cpu_info, describe_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_info_names_the_instruction_sets(monkeypatch):
    info = cpu_info()
    assert set(info) == {"name", "isa", "native_bf16", "overrides", "emulated_avx2"}
    assert set(info["isa"]) <= {"AVX2", "AVX-512", "AVX-512 BF16", "AMX-BF16", "AMX"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    emulated = cpu_info()
    assert emulated["emulated_avx2"] and "EMULATED AVX2" in describe_cpu(emulated)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert not cpu_info()["emulated_avx2"]  # oneDNN capped but PyTorch's own kernels not: not the AVX2 kind


def test_the_tool_prints_and_records_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    import importlib.util

    reference = "d2" if importlib.util.find_spec("detectron2") else "torchvision"  # the tool's choice
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--depths", "18", "--modes", "inference", "train",
         "--variants", "ours", reference, "--size", "64", "96", "--repeats", "2", "--warmup", "0", "--device", "cpu",
         "--json", str(out), "--record", str(tmp_path / "results.md")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CPU: " in proc.stdout and "ISA: " in proc.stdout
    record = json.loads(out.read_text())
    assert record["cpu"]["isa"] == cpu_info()["isa"]
    rows = {(r["mode"], r["variant"]): r for r in record["runs"]}
    assert set(rows) == {(m, v) for m in ("inference", "train") for v in ("ours", reference)}
    for r in rows.values():
        assert "error" not in r, r
        assert r["median_s"] > 0 and r["gflop"] > 0 and len(r["times"]) == 2
    assert rows[("train", "ours")]["saved_mb"] > 0
    # Each row's median, spread and the ratio's range over every pairing of runs, around the median ratio.
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        r = rows[(cells["mode"], cells["variant"])]
        ref = rows[(cells["mode"], reference)]["times"]
        assert cells["min–max s"] == f"{min(r['times']):.3f}–{max(r['times']):.3f}"
        assert cells["ratio range"] == f"{min(ref) / max(r['times']):.2f}–{max(ref) / min(r['times']):.2f}"
        low, high = (float(x) for x in cells["ratio range"].split("–"))
        assert low <= float(cells["ratio"]) <= high
    # --record: the run's own output under a heading naming date, commit, CPU kind and command.
    from resnet_backbones.benchmark import cpu_kind

    results = (tmp_path / "results.md").read_text()
    heading = [line for line in results.splitlines() if line.startswith("## ") and "· commit " in line]
    assert len(heading) == 1 and f"· {cpu_kind(cpu_info())}" in heading[0] and "UTC" in heading[0]
    rows_printed = [line for line in proc.stdout.splitlines() if line.startswith(("| inference", "| train"))]
    assert "--depths 18" in results and len(rows_printed) == 4 and all(r in results for r in rows_printed)


def test_profile_attributes_the_step_to_the_detector_parts():
    """--profile's per-module scopes: every part of the torchvision engine's detector is timed, the parts
    and the rest add up to the step, and the hooks are gone afterwards."""
    import torch

    from resnet_backbones.benchmark.profile import profile_step
    from resnet_backbones.benchmark.rows import detector_step

    step, _, _ = detector_step("tv-engine", 18, (64, 96), 1, torch.device("cpu"),
                               "quick_schedules/faster_rcnn_R18_synthetic.yaml")
    step()
    prof = profile_step(step, step.model, 1, torch.device("cpu"), top=5)
    parts = prof["sections"]
    assert set(parts) == {"body", "FPN", "RPN", "ROI heads", "transform", "rest (backward, optimizer, other)"}
    assert all(parts[k] > 0 for k in ("body", "FPN", "RPN", "ROI heads"))
    assert abs(sum(parts.values()) - prof["step_ms"]) < 1e-6 * prof["step_ms"] + 1e-9
    assert len(prof["ops"]) == 5 and any("conv" in op["op"] for op in prof["ops"])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in step.model.modules())


def test_detector_eval_rows_count_the_graph_and_batch_the_export(tmp_path):
    """detector-eval at batch 2: every row runs the two images in one call (the ONNX rows exported for 2),
    and the FLOPs counted on the exported graph are the same for every row and twice one image's; the int8
    row is labelled int8 and its share is of the int8 peak measured in the same run."""
    pytest.importorskip("onnxruntime", reason="pip install 'resnet_backbones[export]' (CI installs it)")
    from resnet_backbones.benchmark import detector_eval_gflop

    out = tmp_path / "bench.json"
    config = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--depths", "18", "--modes", "detector-eval",
         "--eval-variants", "tv-engine", "tv-export-onnx", "tv-export-onnx-int8", "--size", "64", "96",
         "--batch", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--detector-config", config, "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(rows) == {"tv-engine", "tv-export-onnx", "tv-export-onnx-int8"}, rows
    assert not any("error" in r for r in rows.values()), rows
    one = detector_eval_gflop(18, (64, 96), config)
    assert one > 0 and all(abs(r["gflop"] - 2 * one) < 1e-6 * one for r in rows.values())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| detector-eval")]
    assert len(lines) == 3 and all("% |" in line for line in lines), lines
    assert "| int8 (QDQ" in lines[2] and "int8" not in lines[1]
    assert "int8" in proc.stdout.split("matmul peak")[1].splitlines()[0]
    assert json.loads(out.read_text())["matmul_int8"] > 0

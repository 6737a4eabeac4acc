"""tools/benchmark.py runs its rows in spawned processes and says which CPU kind its figures are from."""
import json
import os
import subprocess
import sys

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
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--depths", "18", "--modes", "inference", "train",
         "--variants", "ours", "--size", "64", "96", "--repeats", "1", "--warmup", "0", "--device", "cpu",
         "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CPU: " in proc.stdout and "ISA: " in proc.stdout
    record = json.loads(out.read_text())
    assert record["cpu"]["isa"] == cpu_info()["isa"]
    rows = {(r["mode"], r["variant"]): r for r in record["runs"]}
    assert set(rows) == {("inference", "ours"), ("train", "ours")}
    for r in rows.values():
        assert "error" not in r, r
        assert r["median_s"] > 0 and r["gflop"] > 0 and len(r["times"]) == 1
    assert rows[("train", "ours")]["saved_mb"] > 0

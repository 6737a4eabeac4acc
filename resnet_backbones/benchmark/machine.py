"""What a timing was measured on: the CPU's name and instruction sets, and the ISA overrides in effect.

A figure means little without its CPU kind: on an AVX2-only CPU oneDNN has no native bf16 (emulated,
hundreds of times slower than FP32) and about half the FP32 throughput of an AVX-512 one.
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` make an AVX-512 machine take the AVX2 code paths
("emulated" AVX2 figures); both are reported when set.
"""
import os
import subprocess
from typing import Any, Dict, Sequence

__all__ = ["checkout_commit", "cpu_info", "cpu_kind", "describe_cpu"]

# /proc/cpuinfo flags worth naming, in the order the header prints them.
_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX-BF16"),
          ("amx_tile", "AMX"))
_OVERRIDES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def cpu_info() -> Dict[str, Any]:
    """{"name", "isa" (the named flags present), "native_bf16" (oneDNN's own answer), "overrides"
    (the ISA environment variables set), "emulated_avx2" (both overrides cap at AVX2)}."""
    from ..precision import cpu_supports_bf16

    name, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "?":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    if name != "?":
                        break
    except OSError:
        pass
    overrides = {k: os.environ[k] for k in _OVERRIDES if k in os.environ}
    native = cpu_supports_bf16()
    isa = [label for flag, label in _FLAGS if flag in flags]
    avx2_cap = (overrides.get("ONEDNN_MAX_CPU_ISA", overrides.get("DNNL_MAX_CPU_ISA", "")).upper() == "AVX2"
                and overrides.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2")
    return {"name": name, "isa": isa, "native_bf16": native, "overrides": overrides, "emulated_avx2": avx2_cap}


def describe_cpu(info: Dict[str, Any]) -> str:
    """One header line: name, instruction sets, native bf16, overrides."""
    text = f"{info['name']}; ISA: {', '.join(info['isa']) or 'none of AVX2/AVX-512/AMX'}; native bf16 (oneDNN): " \
           f"{'yes' if info['native_bf16'] else 'no'}"
    if info["overrides"]:
        text += "; overrides: " + " ".join(f"{k}={v}" for k, v in info["overrides"].items())
        if info["emulated_avx2"]:
            text += " (AVX2 code paths on this CPU: figures are EMULATED AVX2, not an AVX2-only machine)"
    return text


def cpu_kind(info: Dict[str, Any]) -> str:
    """The CPU kind a figure belongs to, in the words the README's tables use: "AVX-512 + native bf16",
    "AVX-512, no native bf16", "AVX2-only", or "emulated AVX2 (an AVX-512 CPU on its AVX2 code paths)"."""
    if info["emulated_avx2"]:
        return "emulated AVX2 (an AVX-512 CPU on its AVX2 code paths)"
    if "AVX-512" in info["isa"]:
        return "AVX-512 + native bf16" if info["native_bf16"] else "AVX-512, no native bf16"
    return "AVX2-only" if "AVX2" in info["isa"] else "no AVX2"


def checkout_commit(root: str, records: Sequence[str] = ()) -> str:
    """The short commit of the checkout at ``root``, with ``-dirty`` when the code that is measured (the
    package, tools, configs, pyproject.toml; not the README or the tests, nor the ``records`` files the tools
    write) has uncommitted changes; "unknown (not a git checkout)" outside one."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "resnet_backbones",
                                "tools", "configs", "pyproject.toml", *(f":!{r}" for r in records)], cwd=root,
                               capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("-dirty" if dirty.strip() else "")

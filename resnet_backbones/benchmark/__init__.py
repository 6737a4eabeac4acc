"""The measurement side of ``tools/benchmark.py`` (rows, timing in isolated processes, the machine). In
the package so that the spawned processes that run each row import it by name."""
from .machine import cpu_info, cpu_kind, describe_cpu
from .measure import (count_gflop, detector_eval_gflop, int8_matmul_peak, matmul_peak, measure, run_isolated,
                      saved_activations_mb, sync)
from .rows import DETECTOR_VARIANTS, EVAL_VARIANTS, MODES, VARIANTS, build_backbone, describe, half_dtype

__all__ = ["cpu_info", "cpu_kind", "describe_cpu", "count_gflop", "int8_matmul_peak", "matmul_peak", "measure",
           "run_isolated", "saved_activations_mb", "sync", "DETECTOR_VARIANTS", "EVAL_VARIANTS", "MODES", "VARIANTS",
           "build_backbone", "describe", "detector_eval_gflop", "half_dtype"]

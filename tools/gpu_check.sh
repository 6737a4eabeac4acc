#!/usr/bin/env bash
# The GPU check, in one command (under 8 minutes on one H100):
#   1. nvidia-smi, torch / CUDA / cuDNN / NCCL versions; fails if CUDA is not available;
#   2. the CUDA tests (tests/test_cuda.py: fp16 AMP + GradScaler, channels_last, bf16/fp16 autocast,
#      one-process NCCL DDP, a 50-iteration quick schedule with evaluation); fails if any was skipped;
#   3. tools/benchmark.py on CUDA: R50/101/152-FPN backbone inference and training, ours against
#      detectron2's built-in backbone when importable, else torchvision's.
#
#   tools/gpu_check.sh [OUTPUT_DIR] [more tools/benchmark.py flags, which override ours]
#   PYTHON=.venv/bin/python tools/gpu_check.sh output/gpu_check --variants ours torchvision
#
# OUTPUT_DIR (default output/gpu_check) receives tests.log, tests.xml, benchmark.md and benchmark.json.
# TESTS_TIMEOUT and BENCH_TIMEOUT (seconds, default 210 and 240) bound steps 2 and 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-output/gpu_check}
shift || true
mkdir -p "$OUT"
TESTS_TIMEOUT=${TESTS_TIMEOUT:-210}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
START=$(date +%s)
SUMMARY=()

# The step functions run with errexit off (step() reports their status), so each returns its first failure.
step() {  # step NAME COMMAND...: run it, print its wall time, fail loudly
  local name=$1 start rc
  shift
  echo "gpu_check: ---- $name"
  start=$(date +%s)
  set +e
  "$@"
  rc=$?
  set -e
  local took=$(( $(date +%s) - start ))
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "gpu_check: $name ran past its timeout" >&2
    echo "gpu_check: FAILED: $name (exit status $rc after $took s)" >&2
    exit "$rc"
  fi
  echo "gpu_check: ok: $name in $took s"
  SUMMARY+=("$(printf '%-40s %5d s' "$name" "$took")")
}

environment() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
  else
    echo "gpu_check: nvidia-smi not found" >&2
  fi
  "$PY" - <<'EOF'
import sys

import torch
import torch.distributed as dist

from resnet_backbones.d2 import detectron2_available

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False: no usable GPU (driver, CUDA_VISIBLE_DEVICES, "
             "or a CPU-only torch build?)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
print(f"NCCL: {torch.cuda.nccl.version() if dist.is_nccl_available() else 'not available'}; "
      f"bf16: {torch.cuda.is_bf16_supported()}")
print("detectron2:", "importable (tested and benchmarked too)" if detectron2_available() else
      "not importable (torchvision engine only; benchmark reference: torchvision)")
EOF
}

cuda_tests() {
  timeout --kill-after=15 "$TESTS_TIMEOUT" "$PY" -m pytest -m cuda tests/test_cuda.py -v -rs -p no:cacheprovider \
    --junitxml "$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log" || return
  "$PY" - "$OUT/tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "skipped", "failures", "errors")}
print("gpu_check: CUDA tests:", n)
if n["failures"] or n["errors"]:
    sys.exit("gpu_check: CUDA tests failed")
if n["tests"] == 0 or n["skipped"]:
    sys.exit(f"gpu_check: {n['skipped']} of {n['tests']} CUDA tests skipped (reasons above): all must run on a GPU")
EOF
}

benchmark() {
  # The reference is detectron2's backbone when importable (FP32 and fp16 AMP: the GPU goal is ours with
  # AMP + channels_last >= 1.3x detectron2's AMP at the same batch), else torchvision's; with ours plain
  # and ours-opt-amp (channels_last, fp16 autocast): 12-15 processes of ~10 s each fit BENCH_TIMEOUT.
  local references
  references=$("$PY" -W ignore -c 'from resnet_backbones.d2 import detectron2_available as a
print("d2 d2-amp" if a() else "torchvision")') || return
  # shellcheck disable=SC2086  # two names when detectron2 is there
  timeout --kill-after=15 "$BENCH_TIMEOUT" "$PY" tools/benchmark.py --device cuda --depths 50 101 152 --batch 2 \
    --repeats 10 --warmup 3 --modes inference train --variants $references ours ours-opt-amp \
    --json "$OUT/benchmark.json" "$@" 2>&1 | tee "$OUT/benchmark.md"
}

step "environment" environment
step "CUDA tests" cuda_tests
step "benchmark" benchmark "$@"
echo "gpu_check: all passed in $(( $(date +%s) - START )) s; outputs in $OUT"
printf '  %s\n' "${SUMMARY[@]}"

#!/usr/bin/env bash
# One run of everything that needs a GPU, for the rare, short loans of one: build the CUDA kernels, run the CUDA tests,
# `styler check-grad --device cuda`, compute-sanitizer on small cases (when installed) and the CUDA benchmark rows.
#
#   benchmarks/gpu_check.sh OUT_DIR
#
# Everything lands in OUT_DIR: one log per step (NN-step.log), pytest's junit XML, check-grad's JSON, the benchmark
# JSON, and summary.txt with each step's status and seconds. A failed step does not stop the later ones; the exit
# status is 1 when any step failed. Each step has a time limit and all of them share a total budget (GPU_CHECK_BUDGET_S,
# default 450 s), so the whole run ends in under 8 minutes even when a step hangs.
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0: the H200/H100 this is planned for; one
# arch keeps the nvcc compile short), GPU_CHECK_BUDGET_S. For testing this script without a GPU:
# GPU_CHECK_DEVICE=cpu (CPU kernels, no CUDA build, quick benchmark), GPU_CHECK_SKIP_BUILD=1, GPU_CHECK_PYTEST_K
# (a pytest -k expression replacing the default "cuda").
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$SECONDS
FAILED=0
STEP=0
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

# run NAME LIMIT_S CMD...: the command under `timeout`, limited to what is left of the budget, output to its log.
run() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  ((limit > left)) && limit=$left
  local log
  log=$(printf '%s/%02d-%s.log' "$OUT" "$STEP" "$name")
  STEP=$((STEP + 1))
  if ((limit < 5)); then
    echo "SKIPPED  $name (budget spent)" | tee -a "$SUMMARY"
    FAILED=1
    return 1
  fi
  local t0=$SECONDS status
  {
    echo "\$ $*"
    timeout --kill-after=10 "$limit" "$@"
  } >"$log" 2>&1
  status=$?
  local took=$((SECONDS - t0))
  if ((status == 0)); then
    echo "OK       $name (${took}s)" | tee -a "$SUMMARY"
  else
    [[ $status -eq 124 || $status -eq 137 ]] && status="timeout after ${limit}s" || status="exit $status"
    echo "FAILED   $name (${took}s, $status; see $(basename "$log"))" | tee -a "$SUMMARY"
    FAILED=1
  fi
  [[ $status == 0 ]]
}

run environment 30 bash -c "$PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())'
  command -v nvidia-smi >/dev/null && nvidia-smi; command -v nvcc >/dev/null && nvcc --version; nproc; true"

if [[ ${GPU_CHECK_SKIP_BUILD:-0} != 1 ]]; then
  if [[ $DEVICE == cuda ]]; then
    run build 270 env INSTANCENORM_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$(nproc)" \
      "$PY" setup.py build_ext --inplace
  else
    run build 270 env INSTANCENORM_CUDA=0 MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace
  fi
fi

# Stop here when the kernels for DEVICE cannot run: every later step would only fail the same way.
if ! run devices 60 "$PY" -c "
import instancenorm, sys
print('compiled', instancenorm.compiled_devices, 'usable', instancenorm.usable_devices())
print('CPU variant', __import__('torch').ops.instancenorm.cpu_capability())
sys.exit('$DEVICE' not in instancenorm.usable_devices())"; then
  echo "instancenorm cannot run on $DEVICE here: later steps skipped" | tee -a "$SUMMARY"
  exit 1
fi

run tests 150 "$PY" -m pytest -q -p no:cacheprovider -x --junitxml="$OUT/pytest.xml" \
  -k "${GPU_CHECK_PYTEST_K:-cuda}" tests/instancenorm/test_kernels.py tests/instancenorm/test_modules.py

run check-grad 60 bash -c "$PY -m styler.cli check-grad --device $DEVICE --json >'$OUT/check-grad.json'"

SANITIZER=$(command -v compute-sanitizer || true)
if [[ -z $SANITIZER && -n ${CUDA_HOME:-} && -x $CUDA_HOME/bin/compute-sanitizer ]]; then
  SANITIZER=$CUDA_HOME/bin/compute-sanitizer
fi
# Small cases covering both layouts, the split (two-launch) path, reduced precision, odd sizes and out=.
SMOKE="
import torch, instancenorm
dev = '$DEVICE'
for shape, cl, dtype in [((2, 3, 5, 7), False, torch.float32), ((2, 37, 9, 11), True, torch.float32),
                         ((1, 2, 700, 500), False, torch.float32), ((1, 64, 200, 300), True, torch.float16),
                         ((3, 5, 33), False, torch.bfloat16), ((4, 6, 1, 1), False, torch.float64)]:
    x = torch.randn(shape, device=dev, dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.rand(shape[1], device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(shape[1], device=dev, dtype=dtype, requires_grad=True)
    x.requires_grad_()
    y = instancenorm.instance_norm(x, w, b)
    torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
    with torch.no_grad():
        instancenorm.instance_norm(x, w, b, out=torch.empty_like(x))
torch.cuda.synchronize() if dev == 'cuda' else None
print('smoke ok')"
if [[ -n $SANITIZER && $DEVICE == cuda ]]; then
  run compute-sanitizer 90 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PY" -c "$SMOKE"
else
  run smoke 60 "$PY" -c "$SMOKE"
  echo "NOTE     compute-sanitizer not found (or not a CUDA run): the small cases ran without it" | tee -a "$SUMMARY"
fi

if [[ $DEVICE == cuda ]]; then
  run benchmark 120 "$PY" -m benchmarks kernels --device cuda --threads 1 --malloc default --json "$OUT/bench-cuda.json"
else
  run benchmark 120 "$PY" -m benchmarks kernels --device cpu --threads 1 --malloc default --quick \
    --json "$OUT/bench-cpu.json"
fi

echo "total $((SECONDS - START))s; $([[ $FAILED == 0 ]] && echo 'all steps passed' || echo 'some steps FAILED')" |
  tee -a "$SUMMARY"
exit $FAILED

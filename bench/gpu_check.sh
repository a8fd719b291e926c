#!/usr/bin/env bash
# One-shot GPU check: on a fresh GPU machine, install, build, verify every kernel against the reference, run
# every GPU test, the kernel benchmarks and the end-to-end benchmark at their GPU shapes, and write one results
# file (plus the verification table). Budget: <= 10 minutes on an H100/H200 (each step has its own timeout).
#
#   bash bench/gpu_check.sh                 # on a GPU machine: results in runs/gpu_check/<date>/
#   bash bench/gpu_check.sh --dry-run       # here, on the CPU: the same steps with tiny shapes, no CUDA required
#   bash bench/gpu_check.sh --out DIR       # write the results to DIR (must not exist, or be empty)
#   bash bench/gpu_check.sh --rebuild       # build the extensions even if they already import
#
# Output: DIR/results.md (machine, versions, every step's command, exit code, seconds and output tail) and
# DIR/verification.txt (the table of `fastvdm info --verify`). A failing step is recorded and the script goes
# on, so one broken kernel does not hide the rest; the exit code is the number of failed steps (0 = all passed).
# Install: uses the torch already installed if it has CUDA (a GPU machine without a network cannot download
# one), else `pip install torch==2.13.0` (PyPI's default build: CUDA 13.0) and the runtime dependencies; then
# builds fastvdm with FASTVDM_REQUIRE_CUDA=1 (a CUDA extension that does not build is a failure, not a skip).
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
rebuild=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --rebuild) rebuild=1 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-runs/gpu_check/$(date -u +%Y%m%d-%H%M%S)$([ $dry = 1 ] && echo -dry)}
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "gpu_check.sh: $out exists and is not empty: pass another --out" >&2
  exit 2
fi
mkdir -p "$out"
results="$out/results.md"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
export PYTHONUNBUFFERED=1
failed=0
t_all=$(date +%s)

if [ $dry = 1 ]; then
  export TRITON_INTERPRET=1 FASTVDM_VERIFY=all OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  mode="dry run (CPU, tiny shapes, TRITON_INTERPRET=1)"
else
  mode="GPU"
fi

{
  echo "# fastvdm GPU check ($mode)"
  echo
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(hostname); commit: $(git rev-parse --short HEAD 2>/dev/null || echo n/a)"
  echo
  echo '```'
  (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: no GPU")
  echo "cpu: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2)"
  echo '```'
  echo
} > "$results"

# step NAME TIMEOUT_S CMD...: run, time, record exit code and the output's tail. The timeouts are the GPU
# budget; a dry run (a CPU doing the GPU's work, tiny shapes or not) gets $slow times as long.
slow=1
[ $dry = 1 ] && slow=${GPU_CHECK_DRY_SLOWDOWN:-5}
step() {
  local name=$1 limit=$(( $2 * slow ))
  shift 2
  local log="$out/$name.log" t0 rc
  echo "== $name: $*"
  t0=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  [ $rc -ne 0 ] && failed=$((failed + 1))
  echo "   exit $rc in ${dt} s (log: $log)"
  {
    echo "## $name: $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc$([ $rc = 124 ] && echo ": timed out after ${limit} s"))") in ${dt} s"
    echo
    echo '```'
    echo "\$ $*"
    tail -n 60 "$log"
    echo '```'
    echo
  } >> "$results"
  return 0
}

# 1. install and build (a function run by `timeout bash -c`, hence exported with what it reads).
do_install() {
  if ! "$py" -c "import torch, sys; sys.exit(0 if torch.version.cuda or $dry else 1)" 2>/dev/null; then
    "$py" -m pip install -q torch==2.13.0 || return 1
  fi
  "$py" -m pip install -q numpy safetensors tqdm pillow scikit-image opencv-python-headless pytest einops \
    $([ $dry = 1 ] || echo triton) || return 1
  # Build unless the extensions this mode needs already import from this checkout (--rebuild forces it).
  local need="import torch, fastvdm, fastvdm._C_cpu$([ $dry = 1 ] || echo ', fastvdm._C_cuda'); import os, sys; "
  need+="sys.exit(0 if os.path.dirname(fastvdm.__file__) == os.path.abspath('fastvdm') else 1)"
  if [ $rebuild = 1 ] || ! "$py" -c "$need" 2>/dev/null; then
    if [ $dry = 1 ]; then
      "$py" -m pip install -q --no-build-isolation --no-deps -e . || return 1
    else
      FASTVDM_REQUIRE_CUDA=1 "$py" -m pip install -q --no-build-isolation --no-deps -e . || return 1
    fi
  else
    echo "extensions already built from this checkout (--rebuild to build again)"
  fi
  "$py" -m fastvdm info
}
export -f do_install
export py dry rebuild
step install 600 bash -c do_install

# 2. every kernel against the reference (forward and gradients, every dtype it serves here).
step verify 120 "$py" -m fastvdm info --verify
sed -n '/^verification against/,$p' "$out/verify.log" > "$out/verification.txt"

# 3. the GPU tests: the op suites on the GPU backends (triton, cuda) and everything marked gpu.
gpu_tests=(tests/test_verify.py tests/test_hot_path.py tests/test_triton_scaling.py tests/test_dispatch.py)
if [ $dry = 1 ]; then
  step tests 300 "$py" -m pytest -q -x -p no:cacheprovider "${gpu_tests[@]}" -k "not info_verify and not attention_offsets"
else
  step tests 300 "$py" -m pytest -q -p no:cacheprovider "${gpu_tests[@]}" tests/test_attention.py \
    tests/test_group_norm.py tests/test_losses.py tests/test_conv.py tests/test_unet.py tests/test_cuda_host.py
fi

# 4. kernel benchmarks at their GPU shapes (tiny shapes on the CPU).
if [ $dry = 1 ]; then
  step bench_attention 120 "$py" bench/bench_attention.py --tiny --repeats 1 --method reference --markdown
  step bench_group_norm 120 "$py" bench/bench_group_norm.py --shapes 1x32x2x8x8 --repeats 1 --no-compile
  step bench_losses 120 "$py" bench/bench_losses.py --shape 1,3,2,8,8 --repeats 1 --markdown
else
  step bench_attention 180 "$py" bench/bench_attention.py --markdown
  step bench_group_norm 120 "$py" bench/bench_group_norm.py
  step bench_losses 60 "$py" bench/bench_losses.py --markdown
fi

# 5. end to end (sampling with the teacher and the student; the GPU default: 16 frames at 64 x 64).
if [ $dry = 1 ]; then
  step bench_e2e 300 "$py" bench/bench_e2e.py --device cpu --repeats 1 --teacher-steps 2
else
  step bench_e2e 180 "$py" bench/bench_e2e.py --device cuda --repeats 3
fi

total=$(( $(date +%s) - t_all ))
{
  echo "## summary"
  echo
  echo "$failed failed step(s); total ${total} s$([ $dry = 0 ] && [ $total -gt 600 ] && echo " (over the 10-minute budget)")"
} >> "$results"
echo "gpu_check: $failed failed step(s) in ${total} s; results: $results, verification table: $out/verification.txt"
exit $failed

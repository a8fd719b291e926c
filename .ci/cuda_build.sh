#!/usr/bin/env bash
# CI step: build fastvdm (CPU and CUDA extensions) against the CUDA build of torch, import both, and run the op
# suites under that torch's pinned Triton in interpreter mode. No GPU is needed: this proves that the CUDA code
# and its torch bindings compile against the wheel a GPU user installs and that the Triton kernels work with
# the Triton version that wheel pins (torch 2.13.0+cu130 pins triton 3.7.1; the main suite runs triton 3.9).
#
# Everything lives under $FASTVDM_CI_CACHE (default ~/.cache/fastvdm-ci), reused when present:
#   wheels/    torch==2.13.0 from PyPI (+cu130) and every wheel it needs to import (~2.7 GB: the CUDA libraries)
#   venv-cu/   a virtual environment with those (--system-site-packages, for numpy/pytest/... of the main step)
#   src/       a copy of the checkout (only changed files rewritten, so ninja rebuilds only what changed)
#   build-temp/  the objects of the last build
# Cold (empty cache): ~3 min download + ~5 min install + the build; warm: the build (incremental) and the tests.
# Needs nvcc (the toolkit root is found by setup.py; set CUDA_HOME if it says so). Without nvcc: says so, exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${FASTVDM_CI_CACHE:-$HOME/.cache/fastvdm-ci}
torch_spec=${FASTVDM_CI_TORCH:-torch==2.13.0}
venv=$cache/venv-cu
py=$venv/bin/python
start=$(date +%s)
stamp() { echo "   [$(( $(date +%s) - start )) s] $*"; }

if ! command -v nvcc >/dev/null && [ -z "${CUDA_HOME:-}" ]; then
  echo "cuda_build: nvcc not found and CUDA_HOME unset: install the CUDA toolkit or set CUDA_HOME" >&2
  exit 1
fi
mkdir -p "$cache/wheels"

# 1. The CUDA torch venv (rebuilt only when missing or broken). --isolated: ignore pip's config, which points
#    at a local CPU-only torch wheel; --ignore-installed: the system's torch 2.13.0+cpu would "satisfy" the pin.
if ! "$py" -c "import torch, triton, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
  stamp "creating $venv with $torch_spec (CUDA build) and the wheels it needs"
  rm -rf "$venv"
  pip download -q --isolated "$torch_spec" -d "$cache/wheels"
  stamp "downloaded ($(du -sh "$cache/wheels" | cut -f1) of wheels)"
  python3 -m venv --system-site-packages "$venv"
  "$py" -m pip install -q --isolated --no-index --find-links "$cache/wheels" --ignore-installed "$torch_spec"
  stamp "installed ($(du -sh "$venv" | cut -f1))"
else
  stamp "reusing $venv"
fi
"$py" -c "import torch, triton; print('   torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)"

# 2. A copy of the checkout, rewriting only files whose content changed (their mtimes stay: incremental build).
mkdir -p "$cache/src"
(git ls-files -z 2>/dev/null || find . -path ./.git -prune -o -type f -print0) | "$py" -c '
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
names = [n for n in sys.stdin.buffer.read().decode().split("\0") if n]
keep = set()
for n in names:
    s, d = os.path.join(src, n), os.path.join(dst, n)
    if not os.path.isfile(s):
        continue
    keep.add(os.path.normpath(n))
    new = open(s, "rb").read()
    if os.path.isfile(d) and open(d, "rb").read() == new:
        continue
    os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
    shutil.copy2(s, d)
for folder in ("fastvdm", "kernels", "csrc", "tests", "bench"):  # drop files deleted upstream
    for root, _, files in os.walk(os.path.join(dst, folder)):
        for f in files:
            rel = os.path.normpath(os.path.relpath(os.path.join(root, f), dst))
            if rel not in keep and not f.endswith((".so", ".pyc")):
                os.remove(os.path.join(root, f))
' "$repo" "$cache/src"

# 3. Build both extensions against the CUDA torch (a skipped CUDA extension is an error here). The editable
#    install only registers the package (FASTVDM_SKIP_EXT=1: fast); build_ext --inplace with a persistent
#    --build-temp lets ninja recompile only the sources that changed since the last run.
stamp "building the extensions against the CUDA torch"
cd "$cache/src"
# -P: not from the working directory (a bare ./fastvdm would pass without the installed fastvdm.kernels mapping).
if ! "$py" -P -c "import fastvdm.kernels, os, sys; sys.exit(os.path.dirname(fastvdm.__file__) != os.path.abspath('fastvdm'))" \
    2>/dev/null; then
  FASTVDM_SKIP_EXT=1 "$py" -m pip install -q --no-build-isolation --no-deps -e . > "$cache/build.log" 2>&1 \
    || { tail -40 "$cache/build.log"; echo "cuda_build: pip install -e failed" >&2; exit 1; }
fi
cpu0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
FASTVDM_REQUIRE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$py" setup.py -q build_ext --inplace --build-temp "$cache/build-temp" \
  >> "$cache/build.log" 2>&1 || { tail -40 "$cache/build.log"; echo "cuda_build: the build failed" >&2; exit 1; }
cpu1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
stamp "built (compiler CPU time $(( (cpu1 - cpu0) / $(getconf CLK_TCK) )) s)"
"$py" - <<'EOF'
import torch, triton, fastvdm, fastvdm._C_cpu, fastvdm._C_cuda
import fastvdm.ops as ops
assert fastvdm.__file__.startswith(__import__("os").getcwd()), fastvdm.__file__
assert torch.version.cuda is not None and triton.__version__ == "3.7.1", (torch.version.cuda, triton.__version__)
ops_ns = [n for n in dir(torch.ops.fastvdm_cuda) if not n.startswith("_")]
assert ops_ns, "fastvdm._C_cuda registered no torch ops"
print(f"   imported fastvdm._C_cuda ({fastvdm._C_cuda.__file__.rsplit('/', 1)[-1]}): torch.ops.fastvdm_cuda."
      f"{{{', '.join(sorted(ops_ns))}}}")
EOF

# 4. The op suites under triton 3.7.1 (interpreter) with this torch.
stamp "op suites under triton $("$py" -c 'import triton; print(triton.__version__)') (TRITON_INTERPRET=1)"
suites=()
for f in attention group_norm losses dispatch reference cuda_host verify; do
  [ -f "tests/test_$f.py" ] && suites+=("tests/test_$f.py")
done
TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$py" -m pytest -q -p no:cacheprovider "${suites[@]}"
stamp "done"

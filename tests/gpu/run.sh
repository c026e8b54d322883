#!/usr/bin/env bash
# The GPU checks for the device machine (an NVIDIA GPU with torch, CuPy and nvcc; no registry).
# Builds libvgpu.so against the toolkit's headers, runs each check, writes $OUT/results.jsonl
# and a table in $OUT/results.md. Usage: bash tests/gpu/run.sh   (OUT defaults to /tmp/hami-gpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hami-gpu}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
INCLUDE="${CUDA_INCLUDE:-/usr/local/cuda/include}"
make -C native -s BUILD=build CUDA_INCLUDE="$INCLUDE" build/libvgpu.so || exit 1
LIB="$PWD/native/build/libvgpu.so"
LIMIT=$((4 << 30))
PY="${PYTHON:-python3}"
limited() { env LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_LIMIT_0=4g CUDA_VISIBLE_DEVICES=0 \
  HAMI_CHECK_LIMIT_BYTES=$LIMIT "$@"; }

# Memory: torch (default and expandable segments), CuPy.
limited "$PY" tests/gpu/checks.py torch_oom >> "$RESULTS"
limited env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$PY" tests/gpu/checks.py torch_oom >> "$RESULTS"
limited "$PY" tests/gpu/checks.py cupy_oom >> "$RESULTS"

# Two processes, one region: 60% + 60% of the limit cannot both fit.
CACHE="$(mktemp -u /tmp/hami-gpu-XXXXXX.cache)"
limited env CUDA_DEVICE_MEMORY_SHARED_CACHE="$CACHE" "$PY" tests/gpu/checks.py torch_hold 0.6 8 >> "$RESULTS" &
sleep 4
limited env CUDA_DEVICE_MEMORY_SHARED_CACHE="$CACHE" "$PY" tests/gpu/checks.py torch_hold 0.6 0 >> "$RESULTS"
wait
rm -f "$CACHE"

# Compute: a fixed matmul loop unlimited, then at 25/50/75%, alone and two side by side.
"$PY" tests/gpu/checks.py matmul_rate 5 >> "$RESULTS"
for sm in 25 50 75; do
  LD_PRELOAD="$LIB" CUDA_DEVICE_SM_LIMIT=$sm "$PY" tests/gpu/checks.py matmul_rate 5 >> "$RESULTS"
done
for sm in 25 50; do
  for i in 1 2; do
    LD_PRELOAD="$LIB" CUDA_DEVICE_SM_LIMIT=$sm \
      CUDA_DEVICE_MEMORY_SHARED_CACHE="/tmp/hami-gpu-pair-$i.cache" \
      "$PY" tests/gpu/checks.py matmul_rate 5 | sed "s/}$/, \"pair\": $i}/" >> "$RESULTS" &
  done
  wait
done

# Routes where the real driver decides: cuGetProcAddress identity, VMM release-while-mapped,
# pool retention (and whether a stream-ordered allocation is reserved at the call), JAX's
# preallocation, CuPy's pool; PyTorch graph capture and three streams under an SM limit.
for check in gpa_identity vmm_release_while_mapped pool_retention jax_prealloc cupy_pool; do
  limited env CUDA_DEVICE_MEMORY_SHARED_CACHE="$(mktemp -u /tmp/hami-gpu-XXXXXX.cache)" \
    "$PY" tests/gpu/checks.py "$check" >> "$RESULTS"
done
"$PY" tests/gpu/checks.py torch_graph_capture 4 >> "$RESULTS"
"$PY" tests/gpu/checks.py torch_streams 4 >> "$RESULTS"
for sm in 30 50; do
  LD_PRELOAD="$LIB" CUDA_DEVICE_SM_LIMIT=$sm "$PY" tests/gpu/checks.py torch_graph_capture 4 >> "$RESULTS"
  LD_PRELOAD="$LIB" CUDA_DEVICE_SM_LIMIT=$sm "$PY" tests/gpu/checks.py torch_streams 4 >> "$RESULTS"
done

# Launch overhead: empty kernels, alternating without and with the library (limits set).
if command -v nvcc >/dev/null; then
  nvcc -O2 -o "$OUT/empty_kernel" tests/gpu/empty_kernel.cu
  for round in 1 2 3; do
    "$OUT/empty_kernel" | sed 's/}$/, "library": false}/' >> "$RESULTS"
    LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_LIMIT_0=4g CUDA_DEVICE_SM_LIMIT=100 "$OUT/empty_kernel" \
      | sed 's/}$/, "library": true}/' >> "$RESULTS"
  done
fi

# Local mode on the real GPU: NVML inventory, two `hami run` torch jobs side by side, each held
# to its own limit by the preloaded library (hami run sets the limits and LD_PRELOAD).
export HAMI_STATE_DIR="$OUT/hami-state" HAMI_LIBVGPU="$LIB"
if "$PY" -m services.local up --nats-port 0 --metrics-port 0 > "$OUT/hami-up.txt" 2>&1; then
  "$PY" -m services.local status --json > "$OUT/hami-status.json"
  for job in 1 2; do
    "$PY" -m services.local run --gpumem 4g --gpucores 50 -- \
      env HAMI_CHECK_LIMIT_BYTES=$LIMIT "$PY" tests/gpu/checks.py torch_oom \
      | sed "s/}$/, \"hami_run\": $job}/" >> "$RESULTS" &
  done
  wait
  "$PY" -m services.local down >> "$OUT/hami-up.txt" 2>&1
else
  echo '{"check": "hami_up", "ok": false}' >> "$RESULTS"
fi

"$PY" tests/gpu/summarize.py "$RESULTS" > "$OUT/results.md"
cat "$OUT/results.md"

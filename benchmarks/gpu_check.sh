#!/usr/bin/env bash
# The GPU step (issue 21) on a bare H100/H200 with torch and triton: every whole-network kernel
# configuration in its own process (CUDA_LAUNCH_BLOCKING=1), a memcheck of the first one that faults
# (when compute-sanitizer works there), then the timing table; results are written after every row.
#   make gpu-prepare                      # here (CPU): generate the modules into .gpu/
#   bash benchmarks/gpu_check.sh [.gpu] [OUT] [networks to check, default all]
# BISECT=1: every precision x chunk x row block x warps (the search that found the 64-row/8-warp fault)
set -u
DIR=${1:-.gpu}
OUT=${2:-${OUT:-gpu_out}}
NAMES=${3:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/device.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/device.txt"
cat "$OUT/device.txt"
python3 benchmarks/gpu_check.py --run "$DIR" --out "$OUT" --names "$NAMES" --jobs "${JOBS:-12}" \
  --budget "${TABLE_BUDGET:-300}" ${BISECT:+--bisect} &
main=$!
# memcheck the first faulting configuration, if any, while the table runs
( while kill -0 $main 2>/dev/null && ! grep -q '"error"' "$OUT/check.jsonl" 2>/dev/null; do sleep 5; done
  line=$(grep '"error"' "$OUT/check.jsonl" 2>/dev/null | head -1)
  if [ -n "$line" ] && command -v compute-sanitizer >/dev/null; then
    args=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(r['name'], r['prec'], r['chunk'], r['block'], r['warps'])" "$line")
    timeout 150 compute-sanitizer --tool memcheck --print-limit 5 python3 benchmarks/gpu_check.py --one "$DIR" $args 4099 0 > "$OUT/memcheck.txt" 2>&1
  fi ) &
wait

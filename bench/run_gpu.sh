#!/usr/bin/env bash
# One call on a lent GPU machine: build the CUDA module, run the whole suite on the GPU, then the
# benchmark tables, writing JSON results to bench/results/ (and to $OUT when the device tool sets it).
#   bash bench/run_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
pip install --no-build-isolation -e . > /tmp/genkernels-build.log 2>&1 || { tail -50 /tmp/genkernels-build.log; exit 1; }
genkernels info
python -m pytest -q -x -p no:cacheprovider tests/ops tests/nn tests/test_backend.py tests/diffusion
device=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))")
mkdir -p bench/results
for dtype in float32 bfloat16; do
  genkernels bench --suite diffusion overhead --dtype "$dtype" --json "bench/results/${device}-diffusion-${dtype}.json"
done
python bench/bench_attention.py
if [ -n "${OUT:-}" ]; then cp bench/results/*.json "$OUT"/; fi

#!/usr/bin/env bash
# Run on a lent GPU machine, in stages (default: all but tune):
#   bash bench/run_gpu.sh [build] [test] [sanitize] [tune] [bench]
# build: the CUDA module (sm_90 only, to build fast); test: the GPU-relevant suites (parallel);
# sanitize: the out-of-range varlen offsets / decode cache lengths under compute-sanitizer memcheck
# (log committed as bench/results/<device>-memcheck.txt);
# tune: bench/tune_attention.py's config sweep; bench: the diffusion and attention tables, then the
# issue-9 suites (masked_conv in float32 and bfloat16, wavenet, pixelcnn; each under a minute on an
# H100-class GPU, capped by SUITE_TIMEOUT), the issue-11 suites (norm, sampler, unet; unet gets twice
# SUITE_TIMEOUT), JSON under bench/results/. Logs and JSON are also copied
# to $OUT when the device tool sets it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/genkernels-out}
mkdir -p "$OUT" bench/results
stages=${*:-build test sanitize bench}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # stages after a build elsewhere still import genkernels
device=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))")
for stage in $stages; do
  echo "=== $stage ($(date +%T))"
  case $stage in
    build)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
      python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
      GENKERNELS_CUDA_ARCHS=${GENKERNELS_CUDA_ARCHS:-90} python -m pip install --no-deps --no-build-isolation -e . \
        > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
      genkernels info
      ;;
    test)
      timeout ${TEST_TIMEOUT:-420} python -m pytest -q -n 8 -p no:cacheprovider --timeout 600 tests/ops tests/nn tests/test_backend.py \
        tests/kernels/test_causal_conv.py "tests/models/test_wavenet.py::test_cuda_graph_generation_equals_eager_and_naive" \
        tests/diffusion tests/test_compile.py > "$OUT/pytest.log" 2>&1
      grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.log" | tail -40
      ;;
    sanitize)
      # Triton's launcher and torch's caching allocator both keep memcheck usable; the cases write
      # canaries around the outputs and compare them afterwards, so a silent overrun fails too.
      compute-sanitizer --tool memcheck --error-exitcode 3 --log-file "$OUT/memcheck.txt" \
        python -m pytest -q -p no:cacheprovider tests/ops/test_attention.py tests/ops/test_attention_decode.py \
        -k "stay_in_bounds or uncovered_rows" > "$OUT/memcheck-pytest.log" 2>&1
      echo "memcheck exit $?"; tail -5 "$OUT/memcheck-pytest.log"; tail -5 "$OUT/memcheck.txt"
      cp "$OUT/memcheck.txt" "bench/results/${device}-memcheck.txt"
      ;;
    tune)
      python bench/tune_attention.py ${TUNE_ARGS:-} --json "$OUT/tune-${device}.json" > "$OUT/tune.log" 2>&1
      grep -E "error|Error" "$OUT/tune.log" | head -5
      sed -n '/best per case/,$p' "$OUT/tune.log"
      ;;
    bench)
      for dtype in float32 bfloat16; do
        genkernels bench --suite diffusion overhead --dtype "$dtype" \
          --json "bench/results/${device}-diffusion-${dtype}.json" > "$OUT/bench-diffusion-$dtype.log" 2>&1
        tail -15 "$OUT/bench-diffusion-$dtype.log"
      done
      python bench/bench_attention.py > "$OUT/bench-attention.log" 2>&1
      tail -60 "$OUT/bench-attention.log"
      # wavenet: generation with and without the CUDA graph and the fused causal conv, in its own script (JSON
      # with both tables)
      timeout $((2 * ${SUITE_TIMEOUT:-120})) python bench/bench_wavenet.py --device cuda --json "bench/results/${device}-wavenet.json" \
        > "$OUT/bench-wavenet.log" 2>&1
      echo "wavenet exit $?"; tail -30 "$OUT/bench-wavenet.log"
      for suite in masked_conv:float32 masked_conv:bfloat16 pixelcnn:float32 flow:float32 flow:bfloat16 \
          norm:float32 norm:bfloat16 sampler:float32 unet:float32; do
        name=${suite%%:*} dtype=${suite#*:}
        limit=${SUITE_TIMEOUT:-120}; [ "$name" = unet ] && limit=$((2 * limit))  # unet compiles two models
        timeout $limit genkernels bench --suite "$name" --dtype "$dtype" \
          --json "bench/results/${device}-${name}-${dtype}.json" > "$OUT/bench-${name}-${dtype}.log" 2>&1
        echo "$name $dtype exit $?"; tail -30 "$OUT/bench-${name}-${dtype}.log"
      done
      cp bench/results/*.json "$OUT"/ 2>/dev/null
      ;;
  esac
done
echo "=== done ($(date +%T))"

"""Training memory and step time of a 32-block RealNVP-like flow on 3x32x32 images, with stored
activations vs recompute-by-inverse (FlowSequential(recompute=True)); see
genkernels/bench/flow_memory.py for the model and what is measured.

Run:  OMP_NUM_THREADS=1 python bench/bench_flow_memory.py --threads 1 --json bench/results/cpu_flow_memory_2core.json
      python bench/bench_flow_memory.py --device cuda --json bench/results/H200-flow-memory.json
The same table (genkernels.bench.flow_memory.run_suite) runs as `genkernels bench --suite flow_memory`.
"""
import sys

from genkernels.bench.flow_memory import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

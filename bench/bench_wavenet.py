"""WaveNet generation: incremental vs naive samples/second at a receptive field of 2,047 samples,
and the real-time factor at 16 kHz (see genkernels/bench/wavenet.py for what is timed).

Run:  OMP_NUM_THREADS=1 python bench/bench_wavenet.py --json bench/results/cpu_wavenet_2core.json
The same table (genkernels.bench.wavenet.run_suite) runs as `genkernels bench --suite wavenet`.
"""
import sys

from genkernels.bench.wavenet import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""PixelCNN sampling of 32x32 images: windowed vs naive images/s and their ratio (the table of
`genkernels bench --suite pixelcnn`: genkernels/bench/pixelcnn.py, which checks that both samplers
draw the same images before reporting).

Run:  OMP_NUM_THREADS=1 python bench/bench_pixelcnn.py [--batch 4] [--repeat 1] [--json FILE]
      python -m pytest bench/bench_pixelcnn.py   (one windowed sample per round)
"""
import argparse
import json
import sys

import pytest
import torch

from genkernels.bench import pixelcnn
from genkernels.bench.timing import environment

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODELS = pixelcnn.MODELS


@pytest.mark.parametrize("windowed", [True, False], ids=["windowed", "naive"])
@pytest.mark.parametrize("model", [m[0] for m in MODELS])
def test_pixelcnn_sample(benchmark, model, windowed):
    fields = dict(MODELS)[model]
    net = pixelcnn.PixelCNN(pixelcnn.PixelCNNConfig(**fields)).to(DEVICE).eval()
    benchmark.pedantic(lambda: net.sample(2, seed=0, windowed=windowed), rounds=1, iterations=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=str(DEVICE))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = pixelcnn.run_suite(args.device, batch=args.batch, repeat=args.repeat)
    for r in rows:
        print(f"{r['model']}  {r['image_shape']} batch {r['batch']}: windowed {r['windowed_images_per_s']:.2f} "
              f"images/s, naive {r['naive_images_per_s']:.2f} images/s, speedup {r['speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"environment": environment(args.device), "pixelcnn": rows}, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

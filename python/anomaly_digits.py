"""Anomaly detection across families on the digits: train a VAE, a flow (RealNVP), a PixelCNN and a
diffusion model on the digits of some classes only (default 0-4), score the held-out digits of every
class, and print one ROC AUC table (1.0: every digit of an unseen class scores above every digit of
a seen class; 0.5: chance) with the average precision.

Scores (genkernels.anomaly.anomaly_scores), higher = more anomalous: the VAE's -ELBO, the flow's
-log p(x) (dequantised), the PixelCNN's exact -log p(x), all in nats per image, and the diffusion
model's mean denoising error over fixed timesteps and noise seeds.

    python python/anomaly_digits.py          # ~2.5 min of CPU time (1 thread)
    python python/anomaly_digits.py --steps 2000 --normal 1 7
"""
import argparse
import time

import torch

from genkernels.anomaly import anomaly_table, digits_families, format_table, held_out_classes_split


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps of each model")
    parser.add_argument("--size", default="modest", choices=["tiny", "modest"], help="model sizes")
    parser.add_argument("--families", nargs="+", default=["vae", "realnvp", "pixelcnn", "diffusion"])
    parser.add_argument("--normal", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="the training classes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--score-draws", type=int, default=4, help="draws per score (z, dequantisation, noise)")
    parser.add_argument("--test-items", type=int, default=None, help="score only the first N held-out digits")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.perf_counter()
    split = held_out_classes_split(normal_classes=args.normal)
    if args.test_items:
        split.test_images, split.test_labels = split.test_images[:args.test_items], split.test_labels[:args.test_items]
        split.is_anomaly = split.is_anomaly[:args.test_items]
    print(f"training on classes {list(split.normal_classes)}: {len(split.train_images)} digits, {args.steps} steps "
          f"each; scoring {int((~split.is_anomaly).sum())} held-out normal and {int(split.is_anomaly.sum())} "
          f"anomalous digits (classes {list(split.anomalous_classes)})")
    families = digits_families(args.size)
    unknown = set(args.families) - set(families)
    if unknown:
        raise SystemExit(f"unknown families {sorted(unknown)}; choose from {sorted(families)}")
    rows = anomaly_table({name: families[name] for name in args.families}, split, train_steps=args.steps,
                         batch_size=args.batch_size, num_samples=args.score_draws, seed=args.seed)
    print(format_table(rows))
    print(f"scores: nats per image (elbo, nll), mean squared error (denoising); "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Semi-supervised learning on the digits with M2 (Kingma et al. 2014): a few labelled digits (50 or
100, balanced, chosen by the seed) and the rest of the 1,000 training digits unlabelled. Prints the
test accuracy of M2's classifier q(y|x) beside a classifier of the same architecture trained on the
labelled digits alone, mean +- std over seeds, for each number of labels and each alpha (the weight of
the classification term; "paper" is 0.1 N, N = 1,000 training digits).

    python python/semisupervised_digits.py   # ~7 min of CPU time (1 thread)
    python python/semisupervised_digits.py --labels 100 --seeds 0 --alphas paper
"""
import argparse
import math
import time

import torch

from genkernels.data import get_dataset
from genkernels.models.m2 import M2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 100], help="labelled digits")
    parser.add_argument("--alphas", nargs="+", default=["paper", "1000"],
                        help="classification weights: numbers, or 'paper' (0.1 N)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of labels, weights and batches")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    parser.add_argument("--hidden", type=int, default=256, help="width of every network")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="unlabelled digits per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    return parser.parse_args()


def train(model, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int):
    """Adam with cosine decay; every step: a random unlabelled batch (labels dropped) + the labelled set."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    model.train()
    for _ in range(steps):
        loss = model.loss(images[torch.randint(0, len(images), (batch_size,), generator=generator)])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval()


def spread(values) -> str:
    values = torch.tensor(values, dtype=torch.float64)
    std = values.std().item() if len(values) > 1 else 0.0
    return f"{values.mean().item():.3f} +- {std:.3f}"


def main():
    args = parse_args()
    train_set, test_set = get_dataset("digits", "train"), get_dataset("digits", "test")
    print(f"M2 on the digits: {len(train_set)} training digits, test on {len(test_set)}, {args.steps} steps, "
          f"seeds {args.seeds}")
    print(f"{'labels':>6}  {'alpha':>7}  {'M2 accuracy':>15}  {'labels-only':>15}  {'test bits/dim':>13}  {'s/run':>6}")
    for num_labels in args.labels:
        for alpha_name in args.alphas:
            alpha = None if alpha_name == "paper" else float(alpha_name)
            accuracy, baseline, bpd, seconds = [], [], [], []
            for seed in args.seeds:
                start = time.perf_counter()
                torch.manual_seed(seed)
                overrides = {"num_labels": num_labels, "label_seed": seed, "alpha": alpha, "hidden": args.hidden,
                             "latent_dim": args.latent_dim}
                model = M2(M2.config_for_data(train_set, overrides))
                model.prepare_dataset(train_set)  # keeps the labelled digits
                train(model, train_set.images, args.steps, args.batch_size, args.lr, seed)
                with torch.no_grad():
                    metrics = model.evaluate(test_set)
                accuracy.append(metrics["accuracy"])
                baseline.append(metrics["baseline_accuracy"])
                bpd.append(metrics["elbo_bpd"])
                seconds.append(time.perf_counter() - start)
            shown = f"{model.config.alpha_value:g}" + ("*" if alpha is None else "")
            print(f"{num_labels:>6}  {shown:>7}  {spread(accuracy):>15}  {spread(baseline):>15}  "
                  f"{sum(bpd) / len(bpd):>13.3f}  {sum(seconds) / len(seconds):>6.1f}", flush=True)
    print("* alpha = 0.1 N, the paper's choice; accuracy: mean +- std over seeds")


if __name__ == "__main__":
    main()

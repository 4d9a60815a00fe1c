"""Anomaly detection with a normalizing flow and a VAE: train both on the digits 0-4 only, then
score held-out digits of the seen classes (0-4) and of the unseen ones (5-9) by their negative
log-likelihood, and report the ROC AUC of each (1.0: every unseen digit scores higher; 0.5: chance).

The flow's score is -log p(x), the dequantised bound on the 17-level grid (exact up to the
dequantisation); the VAE's is -ELBO. Both are in nats per image, on the same levels.

    python python/flow_anomaly.py                 # ~1-2 minutes on 2 CPU cores
    python python/flow_anomaly.py --steps 3000 --flow realnvp
"""
import argparse
import time

import torch

from genkernels.anomaly import train_on_normal
from genkernels.data import get_dataset, load_digits_tensors
from genkernels.metrics import anomaly_auc, bits_per_dim
from genkernels.models import get_model_class
from genkernels.models.vae import VAE, VAEConfig


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of each model")
    parser.add_argument("--flow", default="maf", choices=["maf", "realnvp", "glow"])
    parser.add_argument("--blocks", type=int, default=3, help="MAF blocks")
    parser.add_argument("--hidden", type=int, default=64, help="MAF hidden width")
    parser.add_argument("--seen", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="the training classes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--score-draws", type=int, default=8, help="dequantisation / ELBO draws per score")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def flow_model(name: str, args):
    """The flow family `name` configured for the digits (MAF: --blocks blocks of width --hidden;
    small, because 500 training images are overfit quickly)."""
    cls = get_model_class(name)
    overrides = {"num_blocks": args.blocks, "hidden": args.hidden} if name == "maf" else {}
    return cls(cls.config_for_data(get_dataset("digits", "train"), overrides))  # shape and levels


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    train_images, train_labels = load_digits_tensors("train")  # float (N, 1, 8, 8) in [0, 1]
    seen = torch.tensor(args.seen)
    inliers = train_images[torch.isin(train_labels, seen)]
    held_out = [load_digits_tensors(split) for split in ("val", "test")]
    images = torch.cat([h[0] for h in held_out])
    labels = torch.cat([h[1] for h in held_out])
    is_seen = torch.isin(labels, seen)
    print(f"training on classes {args.seen}: {len(inliers)} images; scoring {int(is_seen.sum())} held-out seen "
          f"and {int((~is_seen).sum())} unseen digits")

    models = {args.flow: (flow_model(args.flow, args), 1e-3),
              "vae": (VAE(VAEConfig(latent_dim=16, hidden=256)), 2e-3)}
    results = {}
    for name, (model, lr) in models.items():
        start = time.perf_counter()
        train_on_normal(model, inliers, args.steps, batch_size=args.batch_size, lr=lr, seed=args.seed)
        with torch.no_grad():
            scores = model.anomaly_score(images, num_samples=args.score_draws)  # nats per image
        results[name] = (anomaly_auc(scores[is_seen], scores[~is_seen]),
                         bits_per_dim(scores[is_seen], 64), bits_per_dim(scores[~is_seen], 64),
                         time.perf_counter() - start)
    label = {"vae": "VAE (-ELBO)"}
    print(f"{'model':<16}{'ROC AUC':>9}{'seen bpd':>10}{'unseen bpd':>12}{'time s':>8}")
    for name, (auc, seen_bpd, unseen_bpd, seconds) in results.items():
        print(f"{label.get(name, name.upper() + ' (-log p)'):<16}{auc:>9.3f}{seen_bpd:>10.3f}{unseen_bpd:>12.3f}"
              f"{seconds:>8.1f}")


if __name__ == "__main__":
    main()

"""Train a VAE on the bundled 8x8 digits, report held-out ELBO / IWAE bits per dimension, show the
anomaly score separating clean from corrupted digits, and write sample, reconstruction and
interpolation figures.

    python python/train_vae.py --steps 3000      # writes runs/examples/train_vae/
"""
import argparse
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.metrics import digits_sample_metrics
from genkernels.models.vae import VAE, VAEConfig
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--likelihood", default="logistic", choices=["bernoulli", "categorical", "logistic"])
    parser.add_argument("--architecture", default="mlp", choices=["mlp", "conv"])
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train vae` writes runs/vae, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/train_vae")
    return parser.parse_args()


def corrupt(images: torch.Tensor, fraction: float = 0.25) -> torch.Tensor:
    """Replace a fraction of the pixels by random digit levels (the anomaly demonstration)."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 17, images.shape, generator=generator) / 16
    return torch.where(torch.rand(images.shape, generator=generator) < fraction, noise, images)


def main():
    args = parse_args()
    train, val, test = (get_dataset("digits", split) for split in ("train", "val", "test"))
    config = VAEConfig(likelihood=args.likelihood, architecture=args.architecture,
                       latent_dim=args.latent_dim, beta=args.beta)
    model = VAE(config)
    trainer = Trainer(model, train, val, TrainConfig(steps=args.steps, batch_size=128, lr=2e-3,
                                                     device=args.device, out_dir=args.out))
    history = trainer.fit()

    with trainer.averaged_weights(), torch.no_grad():
        model.eval()
        metrics = model.evaluate(test)
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        samples = model.sample(64).cpu()
        print("sample Fréchet distance:", round(digits_sample_metrics(samples)["frechet_distance"], 2))
        clean = test.images[:200].to(trainer.device)
        clean_score = model.anomaly_score(clean)
        noisy_score = model.anomaly_score(corrupt(test.images[:200]).to(trainer.device))
        print(f"anomaly score (-ELBO, nats): clean {clean_score.mean():.1f}, corrupted {noisy_score.mean():.1f}; "
              f"corrupted copy scores higher for {(noisy_score > clean_score).float().mean():.0%} of digits")
        paths = save_figures(model.figures(samples), args.out)
    paths.append(plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

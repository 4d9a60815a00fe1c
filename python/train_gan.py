"""Train a class-conditional DCGAN (hinge loss, spectral norm) on the bundled 8x8 digits and score
its samples with the digits classifier: accuracy of samples of the class asked for, and the
Fréchet distance to held-out digits. Writes sample grids (one row per class) and a loss curve.

    python python/train_gan.py --steps 3000      # writes runs/examples/train_gan/

(About 70 s for 3000 steps on 2 CPU cores; `genkernels train gan --set num_classes=10` is the same
model with the CLI's 1000 steps.)
"""
import argparse
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.models.gan import GAN, GANConfig
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--loss", default="hinge", choices=["nonsaturating", "hinge", "wgan-gp"])
    parser.add_argument("--no-spectral-norm", action="store_true")
    parser.add_argument("--unconditional", action="store_true")
    parser.add_argument("--channels", type=int, default=GANConfig.channels)
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train gan` writes runs/gan, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/train_gan")
    return parser.parse_args()


def main():
    args = parse_args()
    train, val, test = (get_dataset("digits", split) for split in ("train", "val", "test"))
    config = GANConfig(loss=args.loss, spectral_norm=not args.no_spectral_norm, channels=args.channels,
                       num_classes=0 if args.unconditional else 10)
    model = GAN(config)
    # GAN.train_defaults (what the CLI applies): Adam lr 1e-3, betas (0, 0.9), batch 64, no weight
    # decay, warm-up or clipping
    train_config = TrainConfig(**{**GAN.train_defaults, "steps": args.steps}, device=args.device, out_dir=args.out)
    trainer = Trainer(model, train, val, train_config)
    history = trainer.fit()

    with trainer.averaged_weights(), torch.no_grad():
        model.eval()
        metrics = model.evaluate(test)
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        labels = None if args.unconditional else torch.arange(64) % 10
        paths = save_figures(model.figures(model.sample(64, labels=labels).cpu()), args.out)
    paths.append(plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

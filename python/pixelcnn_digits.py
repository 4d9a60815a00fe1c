"""Train a Gated PixelCNN on the bundled 8x8 digits (17 levels), report held-out bits per dimension
from the best-on-validation checkpoint beside the uniform bound, and write a sample grid, class
rows (with --num-classes 10) and an inpainting figure (top half given, bottom half sampled).

    python python/pixelcnn_digits.py --steps 1500     # writes runs/examples/pixelcnn_digits/
"""
import argparse
import math
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import image_grid, plot_loss_curve, save_figures
from genkernels.models.pixelcnn import PixelCNN, PixelCNNConfig
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--likelihood", default="categorical", choices=["categorical", "logistic"])
    parser.add_argument("--num-classes", type=int, default=0, help="10: class-conditional on the digit")
    parser.add_argument("--patience", type=int, default=None, help="early stopping, in evaluations")
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train pixelcnn` writes runs/pixelcnn, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/pixelcnn_digits")
    return parser.parse_args()


def main():
    args = parse_args()
    train, val, test = (get_dataset("digits-levels", split) for split in ("train", "val", "test"))
    config = PixelCNN.config_for_data(train, dict(channels=args.channels, num_layers=args.num_layers,
                                                  dropout=args.dropout, likelihood=args.likelihood,
                                                  num_classes=args.num_classes))
    assert isinstance(config, PixelCNNConfig)
    torch.manual_seed(0)
    model = PixelCNN(config)
    steps = max(args.steps, 1)
    train_config = TrainConfig(**{**PixelCNN.train_defaults, "steps": steps, "warmup_steps": min(100, steps),
                                  "eval_every": max(1, min(100, steps // 4)), "patience": args.patience,
                                  "device": args.device, "out_dir": args.out})
    trainer = Trainer(model, train, val, train_config)
    history = trainer.fit()
    best = trainer.best_entry()
    print(f"best validation: {best['val/loss']:.4f} bits/dim at step {best['step']} of {trainer.step}"
          + (" (stopped early)" if trainer.stopped_early else ""))

    with trainer.best_weights(), torch.no_grad():
        model.eval()
        metrics = model.evaluate(test)
        print(f"test NLL {metrics['nll_bpd']:.4f} bits/dim (uniform bound log2 17 = {math.log2(17):.2f}, "
              "VAE IWAE on this split 1.99 in the README)")
        samples = model.sample(64, seed=0).cpu()
        figures = model.figures(samples)
        if config.num_classes:
            labels = torch.arange(config.num_classes).repeat_interleave(8)
            rows = model.sample(len(labels), labels=labels, seed=1).cpu()
            figures["classes"] = image_grid(rows, 8, row_labels=[str(k) for k in range(config.num_classes)])
        paths = save_figures(figures, args.out)
    paths.append(plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

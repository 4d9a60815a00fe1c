"""Train a normalizing flow (Glow or RealNVP) on the bundled 8x8 digits (17 levels), report held-out
bits per dimension from the best-on-validation checkpoint beside the uniform bound and the other
families' figures, and write sample grids at temperatures 0.5, 0.7 and 1.0.

    python python/flow_digits.py --model glow        # writes runs/examples/flow_digits/
    python python/flow_digits.py --model realnvp --steps 2000 --recompute
"""
import argparse
import math
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import image_grid, plot_loss_curve, save_figures
from genkernels.models.glow import Glow
from genkernels.models.realnvp import RealNVP
from genkernels.train import TrainConfig, Trainer

MODELS = {"glow": Glow, "realnvp": RealNVP}
TEMPERATURES = (0.5, 0.7, 1.0)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="glow", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="default: the model's train_defaults")
    parser.add_argument("--hidden-channels", type=int, default=None, help="conditioner width (default: the config's)")
    parser.add_argument("--dequantization", default="variational", choices=["uniform", "variational"])
    parser.add_argument("--num-classes", type=int, default=0, help="10: class-conditional on the digit")
    parser.add_argument("--recompute", action="store_true", help="train with recompute-by-inverse")
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train glow` writes runs/glow, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/flow_digits")
    return parser.parse_args()


def main():
    args = parse_args()
    family = MODELS[args.model]
    train, val, test = (get_dataset("digits-levels", split) for split in ("train", "val", "test"))
    overrides = dict(dequantization=args.dequantization, num_classes=args.num_classes, recompute=args.recompute)
    if args.hidden_channels is not None:
        overrides["hidden_channels"] = args.hidden_channels
    config = family.config_for_data(train, overrides)
    torch.manual_seed(0)
    model = family(config)
    defaults = dict(family.train_defaults)
    steps = max(args.steps if args.steps is not None else defaults.get("steps", 1000), 1)
    warmup = min(defaults.get("warmup_steps", 100), steps)
    train_config = TrainConfig(**{**defaults, "steps": steps, "warmup_steps": warmup,
                                  "eval_every": max(1, min(defaults.get("eval_every", 100), steps // 2)),
                                  "device": args.device, "out_dir": args.out})
    trainer = Trainer(model, train, val, train_config)
    history = trainer.fit()
    best = trainer.best_entry()
    print(f"best validation: {best['val/loss']:.4f} bits/dim at step {best['step']} of {trainer.step}")

    with trainer.best_weights(), torch.no_grad():
        model.eval()
        torch.manual_seed(0)  # the dequantisation noise of the held-out bound
        metrics = model.evaluate(test)
        print(f"test NLL {metrics['nll_bpd']:.4f} bits/dim ({args.model}, {args.dequantization} dequantisation; "
              f"uniform bound log2 17 = {math.log2(17):.2f}, VAE IWAE 1.99 and PixelCNN 1.83 on this split)")
        labels = torch.arange(64) % args.num_classes if args.num_classes else None
        figures = {}
        for temperature in TEMPERATURES:
            samples = model.sample(64, labels=labels, temperature=temperature, seed=0).cpu()
            figures[f"samples_T{temperature:g}"] = image_grid(samples, 8)
        figures.update(model.figures(samples))  # "samples" (T = 1) and the temperature rows
        paths = save_figures(figures, args.out)
    paths.append(plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

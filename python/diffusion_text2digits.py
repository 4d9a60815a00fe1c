"""Text to digits: a caption-conditioned diffusion model on the bundled 8x8 digits, small and real.

Captions are generated in code from the labels ("a handwritten seven", "7", "seven", "the digit
7", ...; genkernels.data.captions), read by a tiny byte-level transformer (genkernels.nn.
ByteTextEncoder, trained jointly) whose tokens the UNet attends to by cross-attention; the caption
is dropped to "" 10% of the time, so sampling can apply classifier-free guidance. Draws samples
for a few captions, including phrasings the templates never produce, and prints how often the
digits classifier agrees with the digit the caption names (chance: 0.1).

    python python/diffusion_text2digits.py --steps 600     # writes runs/examples/diffusion_text2digits/

(600 steps: the classifier agrees with 0.915 of 447 held-out captions at guidance 1, 0.998 at 3; the
long unseen phrasing "draw me a four please" fails, "Two!" works.)
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.data.captions import caption_label, digit_captions
from genkernels.figures import plot_loss_curve, save_image_grid
from genkernels.metrics import class_accuracy, digits_classifier
from genkernels.models.diffusion import Diffusion, DiffusionConfig
from genkernels.train import TrainConfig, Trainer

# the first three are the issue's; the last two are phrasings the caption templates never produce
CAPTIONS = ["a handwritten seven", "3", "nine", "the digit 0", "a picture of a 5", "draw me a four please",
            "Two!"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--text-dim", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=20, help="DPM-Solver++ steps")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--per-caption", type=int, default=50, help="samples per caption")
    parser.add_argument("--held-out", type=int, default=447,
                        help="captions generated for this many test labels (random templates)")
    parser.add_argument("--captions", nargs="+", default=CAPTIONS)
    parser.add_argument("--eval-items", type=int, default=100, help="validation items per Trainer evaluation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/diffusion_text2digits")
    return parser.parse_args()


def main():
    args = parse_args()
    for caption in args.captions:
        if caption_label(caption) is None:
            raise SystemExit(f"caption {caption!r} names no single digit (genkernels.data.captions.caption_label)")
    train, val, test = (get_dataset("digits", split) for split in ("train", "val", "test"))
    config = DiffusionConfig(conditioning="caption", base_channels=args.base_channels, text_dim=args.text_dim,
                             sample_steps=args.sample_steps)
    model = Diffusion(config)
    defaults = {**Diffusion.train_defaults, "steps": args.steps, "batch_size": args.batch_size,
                "eval_every": max(args.steps // 2, 1), "eval_max_items": args.eval_items}
    trainer = Trainer(model, train, val, TrainConfig(**defaults, device=args.device, out_dir=args.out))
    start = time.perf_counter()
    history = trainer.fit()
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s")

    count = min(args.held_out, len(test))
    labels = torch.stack([torch.as_tensor(test[i][1]) for i in range(count)]).long()
    held_out = digit_captions(labels, torch.Generator().manual_seed(0))
    real = torch.stack([test[i][0] for i in range(count)])
    classifier = digits_classifier()
    out = Path(args.out)
    paths = [plot_loss_curve(history, out / "loss.png", units=model.metric_units)]
    print(f"\nclassifier agrees with the caption's digit (chance 0.100; real test digits "
          f"{class_accuracy(real, labels):.3f}):")
    print(f"{'caption':28s}" + "".join(f"  {'guidance ' + format(g, 'g'):>12s}" for g in args.guidance))
    with trainer.averaged_weights(), torch.no_grad():
        model.eval()
        columns = min(8, args.per_caption)
        grids = {g: [] for g in args.guidance}
        for caption in args.captions:
            digit = caption_label(caption)
            scores = []
            for scale in args.guidance:
                samples = model.sample(args.per_caption, caption=caption, guidance_scale=scale, seed=0).cpu()
                predicted = classifier(samples).argmax(1)
                scores.append((predicted == digit).float().mean().item())
                grids[scale].append(samples[:columns])
            print(f"{caption!r:28s}" + "".join(f"  {s:12.3f}" for s in scores))
        scores = []
        for scale in args.guidance:
            samples = model.sample(count, caption=held_out, guidance_scale=scale, seed=0).cpu()
            scores.append(class_accuracy(samples, labels))
        print(f"{f'{count} held-out captions':28s}" + "".join(f"  {s:12.3f}" for s in scores))
        for scale, rows in grids.items():
            paths.append(save_image_grid(torch.cat(rows), out / f"captions_guidance_{scale:g}.png", columns,
                                         row_labels=[c[:20] for c in args.captions]))
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

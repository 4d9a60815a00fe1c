"""Fast (feed-forward) style transfer, Johnson et al. 2016: train one network for one style, then
stylise any photo in a single forward pass, and compare it with Gatys's optimisation of the pixels.

With no download, the content images for training are random crops (with flips and scale jitter)
of scikit-learn's two bundled photographs, written as a folder of PNGs that `genkernels train style
--data FOLDER` reads; the style is a painting-like crop of the flower photo by default (or
--style painting.jpg). The figure is content | style | Gatys (optimisation) | fast network, with the
seconds each took.

    python python/fast_style.py                       # 128 px crops, 600 steps: ~12 min on 2 idle cores
    python python/fast_style.py --steps 2000 --size 256 --style painting.jpg   # the full recipe
    python python/fast_style.py --quick               # tiny settings (seconds; for the tests)

The command-line equivalent once the crops exist: `genkernels train style --data CROPS --set
style_image=painting.jpg` and `genkernels sample RUN --condition content='photo.jpg'`.
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.models.style_transfer import (StyleTransfer, StyleTransferConfig, load_image, sample_photos,
                                              save_image, stylize)
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", help="style image (default: the flower photograph)")
    parser.add_argument("--size", type=int, default=128, help="training crop size in pixels")
    parser.add_argument("--crops", type=int, default=256, help="training crops written to the folder")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gatys-steps", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument("--out", default="runs/examples/fast_style")
    return parser.parse_args()


def write_crops(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """`count` random size x size crops of the bundled photos (scale jitter 0.3-1 of the short side,
    horizontal flips), as PNGs in `folder` (the training set of the fast network)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    photos = list(sample_photos().values())  # (1, 3, 427, 640) each
    for i in range(count):
        photo = photos[i % len(photos)][0]
        short = min(photo.shape[-2:])
        side = int(short * (0.3 + 0.7 * torch.rand((), generator=generator)))
        top = int(torch.randint(0, photo.shape[-2] - side + 1, (), generator=generator))
        left = int(torch.randint(0, photo.shape[-1] - side + 1, (), generator=generator))
        crop = photo[:, top:top + side, left:left + side]
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-1)
        crop = torch.nn.functional.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
        save_image(crop.clamp(0, 1), folder / f"crop_{i:04d}.png")
    return folder


def main():
    args = parse_args()
    if args.quick:
        args.size, args.crops, args.steps, args.batch_size, args.gatys_steps = 32, 40, 3, 2, 2
    out = Path(args.out)
    torch.manual_seed(0)
    photos = sample_photos()
    style_path = args.style
    if style_path is None:  # the flower's centre: large smooth petals and a dark textured core
        style_path = out / "style.png"
        flower = photos["flower"][0]
        save_image(flower[:, 60:380, 160:480], style_path)
    crops = write_crops(out / "crops", args.crops, args.size)
    train, val = get_dataset(str(crops), "train"), get_dataset(str(crops), "val")

    config = StyleTransfer.config_for_data(train, {"style_image": str(style_path)})
    model = StyleTransfer(config)
    defaults = {**StyleTransfer.train_defaults, "steps": args.steps, "batch_size": args.batch_size,
                "eval_every": 0, "out_dir": None, "progress": not args.quick, "keep_best": False,
                "warmup_steps": min(50, args.steps // 2), "log_every": max(1, args.steps // 10)}
    start = time.perf_counter()
    trainer = Trainer(model, train, val, TrainConfig(**defaults))
    trainer.fit()
    train_seconds = time.perf_counter() - start
    model.eval()

    content = load_image(photos["china"], 2 * args.size if not args.quick else args.size, name="content")
    start = time.perf_counter()
    with torch.no_grad():
        fast = model.stylize_batch(content)[0]
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    gatys = stylize(content, load_image(style_path, 2 * args.size, name="style"), steps=args.gatys_steps, size=None)
    gatys_seconds = time.perf_counter() - start

    from genkernels.figures import image_grid

    style = torch.nn.functional.interpolate(load_image(style_path), size=content.shape[-2:], mode="bilinear",
                                            antialias=True, align_corners=False)[0]
    figure = image_grid(torch.stack([content[0], style, gatys.image.cpu(), fast.cpu()]).clamp(0, 1), 4,
                        column_labels=["content", "style", f"Gatys {gatys_seconds:.1f} s",
                                       f"fast net {fast_seconds:.2f} s"])
    figure.save(out / "fast_style.png")
    losses = [e for e in trainer.history if e["kind"] == "train"]
    first, last = losses[0], losses[-1]
    print(f"fast network: {args.steps} steps of batch {args.batch_size} at {args.size} px in {train_seconds:.0f} s; "
          f"loss {first['train/loss']:.3f} -> {last['train/loss']:.3f} (style term "
          f"{first.get('train/style', float('nan')):.4f} -> {last.get('train/style', float('nan')):.4f})")
    print(f"stylising a {tuple(content.shape[-2:])} photo: fast network {fast_seconds:.2f} s, "
          f"Gatys {args.gatys_steps} steps {gatys_seconds:.1f} s")
    print(f"wrote {out / 'fast_style.png'}")


if __name__ == "__main__":
    main()

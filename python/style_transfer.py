"""Neural style transfer with no download: repaint scikit-learn's temple photograph (china.jpg) in
the style of its flower photograph (flower.jpg) by Gatys et al.'s optimisation over the Gram
matrices of a fixed random-filter CNN, and write content | style | result side by side.

    python python/style_transfer.py                       # 128 px, 100 Adam steps: ~1 minute on 2 CPU cores
    python python/style_transfer.py --size 256 --steps 300 --style-weight 30
    python python/style_transfer.py --content me.jpg --style painting.jpg --out me_painted.png

The same from the command line: `genkernels stylize CONTENT STYLE --out out.png --size 256`.
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.models.style_transfer import load_image, sample_photos, save_image, stylize


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", help="content image file (default: scikit-learn's temple photo)")
    parser.add_argument("--style", help="style image file (default: scikit-learn's flower photo)")
    parser.add_argument("--size", type=int, default=128, help="longer side of the result in pixels")
    parser.add_argument("--steps", type=int, default=100, help="optimisation steps")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "lbfgs"])
    parser.add_argument("--style-weight", type=float, default=10.0)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--tv-weight", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/examples/style_transfer/style_transfer.png",
                        help="where the side-by-side figure goes")
    return parser.parse_args()


def side_by_side(images, gap=4):
    """(3, H_i, W_i) images in [0, 1], each resized to the first one's height, in a row: (3, H, sum W)."""
    height = images[0].shape[-2]
    row = []
    for image in images:
        width = max(1, round(image.shape[-1] * height / image.shape[-2]))
        row.append(torch.nn.functional.interpolate(image[None], size=(height, width), mode="bilinear",
                                                   antialias=True, align_corners=False)[0])
        row.append(torch.ones(3, height, gap))
    return torch.cat(row[:-1], dim=-1)


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    photos = sample_photos() if args.content is None or args.style is None else {}
    content = load_image(args.content or photos["china"], args.size, name="content")
    style = load_image(args.style or photos["flower"], args.size, name="style")
    print(f"content {tuple(content.shape[-2:])}, style {tuple(style.shape[-2:])} (H, W); {args.steps} "
          f"{args.optimizer} steps with the random-filter extractor")
    start = time.perf_counter()
    result = stylize(content, style, steps=args.steps, size=None, optimizer=args.optimizer,
                     style_weight=args.style_weight, content_weight=args.content_weight,
                     tv_weight=args.tv_weight, seed=args.seed, progress=True)
    seconds = time.perf_counter() - start
    first, last = result.history[0], result.history[-1]
    print(f"{seconds:.1f} s ({1000 * seconds / max(args.steps, 1):.0f} ms per step)")
    print(f"style loss   {first['style']:.4f} -> {last['style']:.4f}  (relative Gram MSE, mean over layers)")
    print(f"content loss {first['content']:.4f} -> {last['content']:.4f}  (relative feature MSE)")
    out = Path(args.out)
    save_image(side_by_side([content[0], style[0], result.image]), out)
    save_image(result.image, out.with_name(out.stem + "_result.png"))
    print(f"wrote {out} (content | style | result) and {out.with_name(out.stem + '_result.png')}")


if __name__ == "__main__":
    main()

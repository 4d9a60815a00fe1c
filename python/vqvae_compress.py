"""Train a VQ-VAE with its PixelCNN prior on the bundled 8x8 digits, compress the held-out digits
(code maps arithmetic-coded with the prior) and compare bits per image and PSNR with PNG and with
JPEG at a matched PSNR; write reconstructions and prior samples.

    python python/vqvae_compress.py --steps 1500     # writes runs/examples/vqvae_compress/
"""
import argparse
import json
from pathlib import Path

import torch

from genkernels.compress import compress_images, compression_report, decompress
from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.models.vqvae import VQVAE
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="joint steps (autoencoder + prior)")
    parser.add_argument("--prior-steps", type=int, default=500, help="then the prior alone on the final codes")
    parser.add_argument("--num-codes", type=int, default=64)
    parser.add_argument("--code-dim", type=int, default=16)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64],
                        help="stem width, then one stride-2 stage per further entry (32 64: 4x4 codes)")
    parser.add_argument("--prior-channels", type=int, default=64)
    parser.add_argument("--prior-layers", type=int, default=5)
    parser.add_argument("--test-items", type=int, default=None, help="held-out digits compressed (all 447)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/vqvae_compress")
    return parser.parse_args()


def main():
    args = parse_args()
    train, val, test = (get_dataset("digits", split) for split in ("train", "val", "test"))
    config = VQVAE.config_for_data(train, dict(num_codes=args.num_codes, code_dim=args.code_dim,
                                               channels=tuple(args.channels), prior_channels=args.prior_channels,
                                               prior_layers=args.prior_layers))
    torch.manual_seed(0)
    model = VQVAE(config)
    steps = max(args.steps, 1)
    train_config = TrainConfig(**{**VQVAE.train_defaults, "steps": steps, "warmup_steps": min(100, steps),
                                  "eval_every": max(1, min(250, steps // 2)), "device": args.device,
                                  "out_dir": args.out})
    trainer = Trainer(model, train, val, train_config)
    history = trainer.fit()
    model.eval()
    print(f"code maps {config.code_shape[0]}x{config.code_shape[1]} over {config.num_codes} codes "
          f"(uniform {model.codes_per_image * torch.tensor(float(config.num_codes)).log2().item():.0f} bits/image)")
    before = model.evaluate(test)
    if args.prior_steps > 0:
        fit = model.fit_prior(train, args.prior_steps, val_dataset=val, seed=0)  # keeps the best on val
        print(f"prior alone: best validation {min(b for _, b in fit['val']):.3f} bits/code at step "
              f"{fit['best_step']} of {args.prior_steps}")
    metrics = model.evaluate(test)
    print(f"test: PSNR {metrics['psnr_db']:.2f} dB, codebook usage {metrics['codebook_usage']:.0%}, "
          f"perplexity {metrics['perplexity']:.1f}, prior NLL {before['prior_bits_per_image']:.1f} -> "
          f"{metrics['prior_bits_per_image']:.1f} bits/image after the prior-only stage")

    report = compression_report(model, test, max_items=args.test_items)
    images = torch.stack([test[i][0] for i in range(report["images"])])
    data = compress_images(model, images)
    assert torch.equal(decompress(model, data), model.reconstruct(images)), "decompression mismatch"
    vq, png, jpeg = report["vqvae"], report["png"], report["jpeg"]
    print(f"held-out digits: {report['images']} images of {report['pixels_per_image']} pixels; bits/image:")
    print(f"  VQ-VAE + prior (arithmetic coded) {vq['bits_per_image']:8.1f}  (prior NLL "
          f"{vq['prior_nll_bits_per_image']:.1f}; PSNR {vq['psnr_db']:.2f} dB; lossless codes {vq['lossless_codes']})")
    print(f"  PNG, one file per image           {png['bits_per_image']:8.1f}  (lossless)")
    print(f"  PNG, all images in one file       {png['tiled_bits_per_image']:8.1f}  (lossless)")
    for name, entry in (("one file per image", jpeg["per_file"]), ("all images in one file", jpeg["tiled"])):
        print(f"  JPEG q={entry['quality']:<2d}, {name:<22s} {entry['bits_per_image']:8.1f}  "
              f"(PSNR {entry['psnr_db']:.2f} dB)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression.json").write_text(json.dumps(report, indent=2))
    figures = model.figures(model.sample(64, seed=0).cpu())  # reconstructions of held-out digits
    paths = save_figures(figures, out)
    paths.append(plot_loss_curve(history, out / "loss.png", units=model.metric_units))
    print("figures:", *paths, out / "compression.json", sep="\n  ")


if __name__ == "__main__":
    main()

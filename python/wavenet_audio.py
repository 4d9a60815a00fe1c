"""Train a small WaveNet on the bundled synthetic music (mu-law, 8 kHz), report held-out NLL in
bits per sample beside the uniform model's 8 bits, generate clips on the incremental (ring-buffer)
path and write them as a WAV file with a waveform / spectrogram figure.

    python python/wavenet_audio.py --steps 600     # writes runs/examples/wavenet_audio/
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.models.wavenet import WaveNet
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--channels", type=int, default=32, help="residual channels (skip: twice that)")
    parser.add_argument("--cycles", type=int, default=2, help="dilation cycles of 8 layers (1..128)")
    parser.add_argument("--samples", type=int, default=4, help="clips to generate")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each generated clip")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--val-clips", type=int, default=16, help="validation clips per evaluation")
    parser.add_argument("--test-clips", type=int, default=None, help="test clips scored (default: all 32)")
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train wavenet` writes runs/wavenet, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/wavenet_audio")
    return parser.parse_args()


def main():
    args = parse_args()
    train, val, test = (get_dataset("audio", split) for split in ("train", "val", "test"))
    config = WaveNet.config_for_data(train, {"residual_channels": args.channels,
                                             "skip_channels": 2 * args.channels, "cycles": args.cycles})
    model = WaveNet(config)
    print(f"WaveNet: {len(model.layers)} layers, receptive field {config.receptive_field} samples "
          f"({config.receptive_field / config.sample_rate * 1000:.0f} ms at {config.sample_rate} Hz)")
    defaults = {**WaveNet.train_defaults, "steps": args.steps, "eval_max_items": args.val_clips}
    trainer = Trainer(model, train, val, TrainConfig(**defaults, device=args.device, out_dir=args.out))
    history = trainer.fit()

    with trainer.averaged_weights(), torch.no_grad():
        model.eval()
        metrics = model.evaluate(test, max_items=args.test_clips)
        print(f"test NLL {metrics['nll_bits_per_sample']:.3f} bits/sample "
              f"(uniform {metrics['uniform_bits_per_sample']:.0f} bits/sample)")
        length = max(1, int(args.seconds * config.sample_rate))
        start = time.perf_counter()
        codes = model.generate(args.samples, length, temperature=args.temperature, seed=0)
        seconds = time.perf_counter() - start
        print(f"generated {args.samples} x {length} samples in {seconds:.1f} s "
              f"({args.samples * length / seconds:.0f} samples/s, incremental)")
        figures = model.figures(codes, nrow=args.samples)
        files = model.sample_files(codes)
    out = Path(args.out)
    paths = save_figures(figures, out)
    for name, data in files.items():
        (out / name).write_bytes(data)
        paths.append(str(out / name))
    paths.append(plot_loss_curve(history, out / "loss.png", units=model.metric_units))
    print("outputs:", *paths, sep="\n  ")


if __name__ == "__main__":
    main()

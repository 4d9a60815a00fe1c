"""Train a MusicLSTM (and, optionally, a small GPT) on Bach's chorales as note events; report the
held-out test NLL per event beside unigram and bigram baselines, the musical statistics of
generated chorales against the held-out ones beside random / unigram pieces and real training
pieces, and write MIDI files, WAV renderings and piano rolls.

    python python/music_lstm_chorales.py                     # the `genkernels train music-lstm` recipe
    python python/music_lstm_chorales.py --gpt-steps 300     # and a GPT over the same tokens
    python python/music_lstm_chorales.py --quick             # a few steps on a few pieces

Needs `pip install genkernels[music]` (music21 ships the chorales; nothing is downloaded).
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.data.music import ChoralesDataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.models._music import format_music_table, music_sample_files, piano_roll_figure
from genkernels.models.gpt import GPT
from genkernels.models.music_lstm import MusicLSTM, MusicLSTMConfig
from genkernels.train import TrainConfig, Trainer

QUICK = {"steps": 3, "hidden": 16, "embed": 8, "layers": 1, "batch_size": 4, "max_pieces": 4, "block_size": 64,
         "samples": 2, "max_events": 64, "gpt_steps": 2, "gpt_dim": 16, "gpt_depth": 1, "gpt_heads": 2}


def parse_args():
    model, recipe = MusicLSTMConfig(), TrainConfig(**MusicLSTM.train_defaults)  # the CLI's recipe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--hidden", type=int, default=model.hidden_size)
    parser.add_argument("--embed", type=int, default=model.embed_dim)
    parser.add_argument("--layers", type=int, default=model.num_layers)
    parser.add_argument("--dropout", type=float, default=model.dropout)
    parser.add_argument("--layer-norm", action="store_true", help="the LayerNorm-LSTM cell")
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--block-size", type=int, default=256, help="training window in events")
    parser.add_argument("--max-pieces", type=int, default=None, help="use the first pieces of each split only")
    parser.add_argument("--samples", type=int, default=16, help="generated pieces for the statistics")
    parser.add_argument("--max-events", type=int, default=512, help="longest generated piece, in events")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--gpt-steps", type=int, default=0, help="also train a GPT for this many steps (0: no)")
    parser.add_argument("--gpt-dim", type=int, default=128)
    parser.add_argument("--gpt-depth", type=int, default=4)
    parser.add_argument("--gpt-heads", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/music_lstm_chorales")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def train(model, data, steps, batch_size, lr, args, out, defaults):
    train_set, val_set, _ = data
    config = TrainConfig(**{**defaults, "steps": max(steps, 1), "batch_size": batch_size, "lr": lr,
                            "warmup_steps": min(defaults.get("warmup_steps", 30), max(steps // 10, 1)),
                            "eval_every": max(1, steps // 4), "eval_max_items": 64, "num_samples": 2,
                            "checkpoint_every": 0, "device": args.device, "out_dir": str(out), "progress": False,
                            "precision": "fp32"})
    start = time.perf_counter()
    trainer = Trainer(model, train_set, val_set, config)
    history = trainer.fit()
    best = trainer.best_entry()
    print(f"  trained {config.steps} steps in {(time.perf_counter() - start) / 60:.1f} min; best validation "
          f"{best['val/loss']:.3f} nats/event at step {best['step']}")
    plot_loss_curve(history, Path(out) / "loss.png", units=model.metric_units)
    return trainer


def report(name, model, trainer, data, args, out):
    _, _, test = data
    with trainer.best_weights(), torch.no_grad():
        model.eval()
        start = time.perf_counter()
        if isinstance(model, MusicLSTM):
            metrics = model.evaluate(test, num_samples=args.samples, max_new_tokens=args.max_events)
            samples = model.sample(4, max_new_tokens=args.max_events, temperature=args.temperature, seed=0)
        else:
            metrics = model.evaluate_music(test, num_samples=args.samples)
            samples = model.sample_music(4, temperature=args.temperature, seed=0)
        print(f"  test NLL {metrics['loss']:.3f} nats/event = {metrics['bits_per_token']:.3f} bits/event; "
              f"unigram {metrics['unigram_nll']:.3f}, bigram {metrics['bigram_nll']:.3f} nats/event on the same "
              f"{int(metrics['tokens'])} events ({time.perf_counter() - start:.0f} s with the statistics)")
        print(f"  {args.samples} generated pieces: {metrics['samples_steps'] / 16:.1f} bars of 4/4 on average, "
              f"{metrics['samples_ended']:.0%} ended by themselves")
        files = music_sample_files(samples, "events")
        for file_name, data_bytes in files.items():
            (Path(out) / file_name).write_bytes(data_bytes)
        save_figures({"piano_roll": piano_roll_figure(samples, "events")}, out)
    print(f"  wrote {len(files) // 2} MIDI + WAV files and piano_roll.png to {out}/")
    return metrics


def main():
    args = parse_args()
    torch.manual_seed(0)
    data = tuple(ChoralesDataset(split, block_size=args.block_size, max_pieces=args.max_pieces)
                 for split in ("train", "val", "test"))
    for held_out in data[1:]:
        held_out.train_split = data[0]  # the n-gram / unigram baselines come from these training pieces
    print(f"chorales: {', '.join(f'{len(d.pieces)} {d.split} pieces ({d.tokens.numel()} events)' for d in data)}")
    root = Path(args.out)
    config = MusicLSTM.config_for_data(data[0], {"hidden_size": args.hidden, "embed_dim": args.embed,
                                                 "num_layers": args.layers, "dropout": args.dropout,
                                                 "layer_norm": args.layer_norm})
    lstm = MusicLSTM(config)
    print(f"MusicLSTM: embed {config.embed_dim}, {config.num_layers} x LSTM {config.hidden_size}"
          f"{' (LayerNorm)' if config.layer_norm else ''}, {sum(p.numel() for p in lstm.parameters()) / 1e6:.2f}M "
          f"parameters; {args.steps} steps of {args.batch_size} x {args.block_size} events")
    trainer = train(lstm, data, args.steps, args.batch_size, args.lr, args, root / "lstm", MusicLSTM.train_defaults)
    results = {"samples": report("lstm", lstm, trainer, data, args, root / "lstm")}
    if args.gpt_steps > 0:
        torch.manual_seed(0)
        gpt = GPT(GPT.config_for_data(data[0], {"dim": args.gpt_dim, "depth": args.gpt_depth,
                                                "num_heads": args.gpt_heads, "dropout": 0.1}))
        print(f"GPT: dim {gpt.config.dim}, depth {gpt.config.depth}, context {gpt.config.context} events, "
              f"{sum(p.numel() for p in gpt.parameters()) / 1e6:.2f}M parameters; {args.gpt_steps} steps")
        gpt_trainer = train(gpt, data, args.gpt_steps, args.batch_size, 1e-3, args, root / "gpt", GPT.train_defaults)
        results["gpt"] = report("gpt", gpt, gpt_trainer, data, args, root / "gpt")
    lstm_metrics = results["samples"]
    print("\ntest NLL (nats/event): " + ", ".join(
        [f"MusicLSTM {lstm_metrics['loss']:.3f}"] + ([f"GPT {results['gpt']['loss']:.3f}"] if "gpt" in results else [])
        + [f"bigram {lstm_metrics['bigram_nll']:.3f}", f"unigram {lstm_metrics['unigram_nll']:.3f}"]))
    merged = dict(lstm_metrics)
    if "gpt" in results:
        merged.update({k.replace("samples_", "gpt_"): v for k, v in results["gpt"].items() if k.startswith("samples_")})
    print("\nmusical statistics vs the held-out test pieces (JS distances in bits: lower is closer):")
    print(format_music_table(merged, ("samples", "gpt", "train", "unigram", "random"),
                             {"samples": "MusicLSTM", "gpt": "GPT", "train": "real (train)"}))


if __name__ == "__main__":
    main()

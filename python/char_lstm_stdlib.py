"""Train an LSTM language model (genkernels.models.CharLSTM) on the bundled Python-stdlib text with the
recipe of `genkernels train lstm` (over a BPE fitted to the train split's megabytes, as the CLI does;
--tokenizer byte for bytes), report held-out test bits per byte beside zlib and lzma on the same bytes,
continue a prompt carrying the LSTM state, and check that it equals re-running the prefix.

    python python/char_lstm_stdlib.py                           # the default recipe; runs/examples/char_lstm_stdlib/
    python python/char_lstm_stdlib.py --steps 100 --hidden 128  # a quick look
    python python/char_lstm_stdlib.py --quick                   # seconds: a smoke run
"""
import argparse
import codecs
import sys
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve
from genkernels.models.char_lstm import CharLSTM, CharLSTMConfig
from genkernels.train import TrainConfig, Trainer

QUICK = {"steps": 4, "hidden": 16, "embed": 8, "layers": 1, "batch_size": 4, "context": 32,
         "max_bytes": 40_000, "test_items": 4, "new_tokens": 8}


def parse_args():
    model, recipe = CharLSTMConfig(), TrainConfig(**CharLSTM.train_defaults)  # the CLI's recipe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny settings for a smoke run: {QUICK}")
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--hidden", type=int, default=model.hidden_size)
    parser.add_argument("--embed", type=int, default=model.embed_dim)
    parser.add_argument("--layers", type=int, default=model.num_layers)
    parser.add_argument("--dropout", type=float, default=model.dropout)
    parser.add_argument("--recurrent-dropout", type=float, default=model.recurrent_dropout)
    parser.add_argument("--layer-norm", action="store_true", help="LayerNorm-LSTM cells")
    parser.add_argument("--context", type=int, default=None, help="training window (default: the data's 256)")
    parser.add_argument("--tokenizer", choices=["bpe", "byte"], default=None,
                        help="default: what CharLSTM.config_for_data fits (a BPE for the megabytes of stdlib text)")
    parser.add_argument("--bpe-vocab", type=int, default=model.bpe_vocab)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--max-bytes", type=int, default=None, help="bytes per split (default: the dataset's)")
    parser.add_argument("--test-items", type=int, default=None,
                        help="test windows evaluated (default: the whole test split)")
    parser.add_argument("--prompt", default="def fibonacci(n):")
    parser.add_argument("--new-tokens", type=int, default=200, help="length of the generated continuations")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/char_lstm_stdlib")
    args = parser.parse_args()
    if args.quick:
        given = {a.lstrip("-").replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
    return args


def stream_to_stdout(tokenizer):
    """generate's stream callback: print sequence 0's bytes as they come (UTF-8 decoded incrementally)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def stream(step, tokens):
        if int(tokens[0]) >= 0:
            sys.stdout.write(decoder.decode(tokenizer.token_bytes(int(tokens[0]))))
            sys.stdout.flush()
    return stream


def timed(generate, count: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = generate()[0]
    return count / (time.perf_counter() - start), tokens


def main():
    args = parse_args()
    kwargs = {}
    if args.context:
        kwargs["block_size"] = args.context
    if args.max_bytes:
        kwargs["max_bytes"] = args.max_bytes
    train, val, test = (get_dataset("text", split, **kwargs) for split in ("train", "val", "test"))
    overrides = dict(hidden_size=args.hidden, embed_dim=args.embed, num_layers=args.layers, dropout=args.dropout,
                     recurrent_dropout=args.recurrent_dropout, layer_norm=args.layer_norm, bpe_vocab=args.bpe_vocab)
    if args.tokenizer:
        overrides["tokenizer"] = args.tokenizer
    config = CharLSTM.config_for_data(train, overrides)
    torch.manual_seed(0)
    model = CharLSTM(config)
    train, val, test = (model.prepare_dataset(d) for d in (train, val, test))  # BPE: token windows
    steps = max(args.steps, 1)
    defaults = TrainConfig(**CharLSTM.train_defaults)
    train_config = TrainConfig(**{
        **CharLSTM.train_defaults, "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
        "warmup_steps": min(defaults.warmup_steps, steps), "eval_every": min(defaults.eval_every, max(1, steps // 2)),
        "device": args.device, "out_dir": args.out, "checkpoint_every": 0})
    unit = "bytes" if config.tokenizer == "byte" else "BPE tokens"
    print(f"CharLSTM {config.num_layers} x {config.hidden_size} (embed {config.embed_dim}"
          f"{', LayerNorm' if config.layer_norm else ''}), vocab {config.vocab_size}, windows of {config.context} "
          f"{unit}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; {steps} steps of "
          f"{train_config.batch_size} windows, lr {train_config.lr:g}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    trainer = Trainer(model, train, val, train_config)
    history = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    best = trainer.best_entry()
    print(f"trained in {minutes:.1f} min; best validation {best['val/bits_per_byte']:.3f} bits/byte at step "
          f"{best['step']} (on {train_config.eval_max_items} windows)")

    with trainer.best_weights(), torch.no_grad():
        model.eval()
        start = time.perf_counter()
        metrics = model.evaluate(test, max_items=args.test_items)
        print(f"test: {metrics['bits_per_byte']:.3f} bits/byte, zlib {metrics['zlib_bits_per_byte']:.3f}, "
              f"lzma {metrics['lzma_bits_per_byte']:.3f} on the same bytes ({time.perf_counter() - start:.0f} s)")

        prompt = model.tokenizer.encode(args.prompt)
        new = max(args.new_tokens, 1)
        print(f"\nsampled continuation (temperature {args.temperature}, carried state):\n{args.prompt}", end="")
        model.generate([prompt], new, temperature=args.temperature, seed=0, stream=stream_to_stdout(model.tokenizer))
        cached, greedy = timed(lambda: model.generate([prompt], new, temperature=0), new)
        rerun, reference = timed(lambda: model.generate_uncached([prompt], new), new)
        print(f"\n\ngreedy, {new} new tokens: {cached:.0f} tokens/s carrying the state, {rerun:.0f} tokens/s "
              f"re-running the prefix ({cached / rerun:.1f}x); same tokens: {greedy == reference}")
    print("loss curve:", plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))


if __name__ == "__main__":
    main()

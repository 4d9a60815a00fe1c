"""Train a GPT on the bundled Python-stdlib text with the default recipe of `genkernels
train gpt` (a BPE fitted to the training split; --tokenizer byte for bytes), report held-out test bits per byte beside zlib and lzma on the same bytes, continue a
prompt with the KV cache, and time cached generation against re-running the context per token.

    python python/gpt_stdlib.py                          # the default recipe; writes runs/examples/gpt_stdlib/
    python python/gpt_stdlib.py --steps 300 --dim 128    # a quick look
"""
import argparse
import codecs
import sys
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve
from genkernels.models.gpt import GPT, GPTConfig
from genkernels.train import TrainConfig, Trainer


def parse_args():
    model, recipe = GPTConfig(), TrainConfig(**GPT.train_defaults)  # the defaults are the CLI's recipe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--dim", type=int, default=model.dim)
    parser.add_argument("--depth", type=int, default=model.depth)
    parser.add_argument("--heads", type=int, default=model.num_heads)
    parser.add_argument("--tokenizer", choices=["bpe", "byte"], default=None,
                        help="default: what GPT.config_for_data fits (a BPE for the megabytes of stdlib text)")
    parser.add_argument("--context", type=int, default=None, help="training window (default: the data's block size)")
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--warmup-steps", type=int, default=recipe.warmup_steps)
    parser.add_argument("--min-lr-ratio", type=float, default=recipe.min_lr_ratio)
    parser.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    parser.add_argument("--precision", default=recipe.precision, choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--test-items", type=int, default=None,
                        help="test windows evaluated (default: the whole test split)")
    parser.add_argument("--prompt", default="def fibonacci(n):")
    parser.add_argument("--new-tokens", type=int, default=128, help="length of the generated continuations")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train gpt` writes runs/gpt, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/gpt_stdlib")
    return parser.parse_args()


def stream_to_stdout(tokenizer):
    """GPT.generate's stream callback: print sequence 0's token bytes as they come, decoding UTF-8
    incrementally so a multi-byte character (split across tokens or bytes) is printed whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def stream(step, tokens):
        if int(tokens[0]) >= 0:
            sys.stdout.write(decoder.decode(tokenizer.token_bytes(int(tokens[0]))))
            sys.stdout.flush()
    return stream


def tokens_per_second(generate, count: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = generate()[0]
    return count / (time.perf_counter() - start), tokens


def main():
    args = parse_args()
    block = {"block_size": args.context} if args.context else {}
    train, val, test = (get_dataset("text", split, **block) for split in ("train", "val", "test"))
    overrides = dict(dim=args.dim, depth=args.depth, num_heads=args.heads)
    if args.tokenizer:
        overrides["tokenizer"] = args.tokenizer
    config = GPT.config_for_data(train, overrides)
    torch.manual_seed(0)
    model = GPT(config)
    train, val, test = (model.prepare_dataset(d) for d in (train, val, test))  # BPE: token windows
    steps = max(args.steps, 1)
    train_config = TrainConfig(**{
        **GPT.train_defaults, "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
        "warmup_steps": min(args.warmup_steps, steps), "min_lr_ratio": args.min_lr_ratio,
        "weight_decay": args.weight_decay, "precision": args.precision,
        "eval_every": min(TrainConfig(**GPT.train_defaults).eval_every, max(1, steps // 4)),
        "device": args.device, "out_dir": args.out})
    print(f"GPT ({config.tokenizer}, vocab {config.vocab_size}) dim {config.dim}, depth {config.depth}, "
          f"heads {config.num_heads}, context {config.context} tokens, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; {steps} steps of "
          f"{train_config.batch_size} windows, lr {train_config.lr:g}, {train_config.precision}")
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
              f"lzma {metrics['lzma_bits_per_byte']:.3f} on the same bytes "
              f"({time.perf_counter() - start:.0f} s)")

        prompt = list(model.tokenizer.encode(args.prompt))
        new = min(args.new_tokens, config.context - len(prompt))
        print(f"\nsampled continuation (temperature {args.temperature}, KV cache):\n{args.prompt}", end="")
        model.generate([prompt], new, temperature=args.temperature, top_k=None, seed=0, stream=stream_to_stdout(model.tokenizer))
        cached, greedy = tokens_per_second(lambda: model.generate([prompt], new, temperature=0), new)
        uncached, reference = tokens_per_second(lambda: model.generate_uncached([prompt], new), new)
        print(f"\n\ngreedy, {new} new tokens: {cached:.0f} tokens/s with the KV cache, {uncached:.0f} tokens/s "
              f"re-running the context ({cached / uncached:.1f}x); same tokens: {greedy == reference}")
    print("loss curve:", plot_loss_curve(history, Path(args.out) / "loss.png", units=model.metric_units))


if __name__ == "__main__":
    main()

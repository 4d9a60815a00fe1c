"""Train the encoder-decoder Seq2SeqTransformer on a generated task (arithmetic by default: "17+8*2" ->
"33"), then report held-out exact-match accuracy of greedy decoding and of beam search beside the
majority-answer and copy-the-source baselines, and show some predictions.

    python python/seq2seq_arithmetic.py                  # arithmetic, writes runs/examples/seq2seq_arithmetic/
    python python/seq2seq_arithmetic.py --task sort --steps 1500
"""
import argparse
import time

import torch

from genkernels.data.seq2seq_tasks import TASKS, Seq2SeqTaskDataset
from genkernels.models.seq2seq import Seq2SeqTransformer
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arithmetic", choices=TASKS)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--encoder-depth", type=int, default=2)
    parser.add_argument("--decoder-depth", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--positions", default="sinusoidal", choices=["sinusoidal", "learned"])
    parser.add_argument("--max-operands", type=int, default=3, help="arithmetic: operands per expression (2..)")
    parser.add_argument("--max-value", type=int, default=20, help="arithmetic: largest operand")
    parser.add_argument("--max-len", type=int, default=10, help="sort / reverse: longest sequence")
    parser.add_argument("--train-size", type=int, default=50_000, help="training problems")
    parser.add_argument("--test-size", type=int, default=1000, help="held-out test problems")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--show", type=int, default=8, help="test predictions to print")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/seq2seq_arithmetic")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    options = {"max_operands": args.max_operands, "max_value": args.max_value, "max_len": args.max_len}
    train = Seq2SeqTaskDataset(args.task, "train", size=args.train_size, **options)
    val = Seq2SeqTaskDataset(args.task, "val", size=min(1000, args.test_size), **options)
    test = Seq2SeqTaskDataset(args.task, "test", size=args.test_size, **options)
    config = Seq2SeqTransformer.config_for_data(train, {
        "dim": args.dim, "encoder_depth": args.encoder_depth, "decoder_depth": args.decoder_depth,
        "num_heads": args.num_heads, "positions": args.positions})
    model = Seq2SeqTransformer(config)
    print(f"{args.task}: {len(train)} train / {len(test)} test problems (disjoint), "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    trainer = Trainer(model, train, val, TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=100, weight_decay=0.01,
        eval_every=0, eval_max_items=256, log_every=max(1, args.steps // 10), ema_decay=0.0, seed=args.seed,
        device=args.device, out_dir=args.out, num_samples=4, progress=False))
    start = time.perf_counter()
    chunk = max(1, args.steps // 10)
    while trainer.step < args.steps:
        trainer.fit(stop_at=min(args.steps, trainer.step + chunk))
        loss = next(e["train/loss"] for e in reversed(trainer.history) if e["kind"] == "train")
        print(f"step {trainer.step:5d}  train loss {loss:.4f} nats/token  {time.perf_counter() - start:5.0f} s",
              flush=True)
    seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        metrics = model.evaluate(test, beam_size=args.beam_size)
        beam = f"exact_match_beam{args.beam_size}"
        print(f"trained {args.steps} steps in {seconds:.0f} s; test exact match: greedy "
              f"{metrics['exact_match']:.1%}" + (f", beam {args.beam_size} {metrics[beam]:.1%}" if beam in metrics
                                                 else "")
              + f"  vs  majority answer {metrics['majority_answer_exact_match']:.1%}, copy the source "
                f"{metrics['copy_source_exact_match']:.1%}; token accuracy {metrics['token_accuracy']:.1%}")
        shown = test.problems[:args.show]
        greedy = model.generate([s for s, _ in shown])
        beams = model.generate([s for s, _ in shown], beam_size=max(1, args.beam_size))
        for (source, target), g, b in zip(shown, greedy, beams):
            print(f"  {source:>12} -> greedy {g:<12} beam {b:<12} target {target}  {'ok' if g == target else 'WRONG'}")


if __name__ == "__main__":
    main()

"""Train a byte-level BERT by masked-language modelling on the bundled Python-stdlib text, report
held-out masked-token accuracy beside a unigram baseline, and fill "def __init__(self, <mask>):".

    OMP_NUM_THREADS=1 python python/bert_fill_mask.py --steps 800     # writes runs/examples/bert_fill_mask/

The masks follow BERT's 80/10/10 rule (15% of the bytes chosen; 80% of those become [MASK], 10% a
random byte, 10% stay); accuracy and bits are measured at the same masked positions of the test
split (fixed mask seed) for the model and for the unigram baseline (the byte frequencies of the
training batches: predict the most frequent byte).
"""
import argparse
import time

import torch

from genkernels.data.text import TextDataset
from genkernels.models.bert import BERT, BERTConfig
from genkernels.train import TrainConfig, Trainer

PROMPT = "def __init__(self, <mask>):"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--block-size", type=int, default=64, help="tokens per window, [CLS] and [SEP] included")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-bytes", type=int, default=2_000_000, help="training bytes read from the stdlib")
    parser.add_argument("--eval-items", type=int, default=256, help="test windows scored")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/examples/bert_fill_mask")
    return parser.parse_args()


def main():
    args = parse_args()
    train = TextDataset("stdlib", "train", block_size=args.block_size, max_bytes=args.max_bytes)
    val = TextDataset("stdlib", "val", block_size=args.block_size, max_bytes=200_000)
    test = TextDataset("stdlib", "test", block_size=args.block_size, max_bytes=400_000)
    torch.manual_seed(args.seed)  # the initial weights (the trainer seeds the batches and masks)
    model = BERT(BERTConfig(context=args.block_size, dim=args.dim, depth=args.depth, num_heads=args.heads))
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_steps=min(100, args.steps // 10), eval_every=args.steps, eval_max_items=32,
                         checkpoint_every=0, progress=False, device=args.device, seed=args.seed, out_dir=args.out)
    trainer = Trainer(model, train, val, config)
    start = time.time()
    trainer.fit()
    print(f"trained {args.steps} steps ({args.batch_size} windows of {args.block_size} tokens) in "
          f"{time.time() - start:.0f} s")

    with trainer.averaged_weights(), torch.no_grad():
        model.eval()
        m = model.evaluate(test, max_items=args.eval_items)
        print(f"held-out masked-token accuracy {m['masked_accuracy']:.3f} (unigram baseline "
              f"{m['unigram_masked_accuracy']:.3f}); bits per masked byte {m['bits_per_masked_byte']:.2f} "
              f"(unigram {m['unigram_bits_per_masked_byte']:.2f}); {int(m['masked_tokens'])} masked test bytes")
        for num_bytes in (1, 4):
            print(f"fill_mask({PROMPT!r}, num_bytes={num_bytes}):")
            for candidate in model.fill_mask(PROMPT, top_k=args.top_k, num_bytes=num_bytes):
                print(f"  {candidate['score']:.3f}  {candidate['text']!r}")


if __name__ == "__main__":
    main()

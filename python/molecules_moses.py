"""Molecule generation on the MOSES benchmark: train a SMILES model on CPU, sample, and print the
MOSES table beside the published rows and the simple baselines; for a conditional model the
property-targeting report; for the SMILES VAE latent-space optimisation of QED.

    python python/molecules_moses.py                                   # smiles-lstm, the default recipe
    python python/molecules_moses.py --model smiles-gpt
    python python/molecules_moses.py --model smiles-lstm --conditional # QED / logP / SA targets
    python python/molecules_moses.py --model smiles-vae                # + optimize_latent on QED
    python python/molecules_moses.py --load runs/smiles-lstm           # a trained run
    python python/molecules_moses.py --quick                           # tiny settings (for the tests)

Writes to --out: molecules.png (samples drawn by RDKit with their QED), properties.png (logP, SA,
QED and weight of the samples beside the test set), samples.smi and moses.json. Needs
`pip install "genkernels[chem]" && pip install --no-deps molsets`.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from genkernels import molecules
from genkernels.data.smiles import MosesDataset, load_moses_smiles
from genkernels.figures import save_figures
from genkernels.models import get_model_class


QUICK = {"smiles-lstm": {"hidden_size": 16, "embed_dim": 8}, "smiles-gpt": {"dim": 16, "depth": 1, "num_heads": 2},
         "smiles-vae": {"latent_dim": 8, "encoder_hidden": 16, "decoder_hidden": 16, "cond_max_items": 300}}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smiles-lstm", choices=["smiles-lstm", "smiles-gpt", "smiles-vae"])
    parser.add_argument("--load", metavar="RUN", help="a trained run (genkernels train ...) instead of training here")
    parser.add_argument("--steps", type=int, help="training steps (default: the family's train_defaults)")
    parser.add_argument("--train-items", type=int, default=200_000, help="training molecules (a seeded subset)")
    parser.add_argument("--conditional", action="store_true", help="condition on QED / logP / SA (lstm, gpt)")
    parser.add_argument("--samples", type=int, default=30_000, help="molecules sampled for the MOSES table")
    parser.add_argument("--no-baselines", action="store_true", help="skip the train-sample and n-gram rows")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument("--out", default="runs/examples/molecules")
    return parser.parse_args()


def train(args):
    from genkernels.train import TrainConfig, Trainer

    cls = get_model_class(args.model)
    items = 300 if args.quick else args.train_items
    train_set, val_set = MosesDataset("train", max_items=items), MosesDataset("val", max_items=64 if args.quick else 2000)
    overrides = {}
    if args.conditional:
        overrides.update(conditional=True, cond_max_items=items)
    if args.quick:
        overrides.update(QUICK[args.model])
    torch.manual_seed(0)
    model = cls(cls.config_for_data(train_set, overrides))
    train_set, val_set = model.prepare_dataset(train_set), model.prepare_dataset(val_set)
    config = {**cls.train_defaults, "out_dir": None, "progress": not args.quick, "keep_best": False,
              "eval_every": 0}
    if args.steps or args.quick:
        config["steps"] = 4 if args.quick else args.steps
        config["warmup_steps"] = min(config.get("warmup_steps", 0) or 0, config["steps"] // 2)
    config.pop("checkpoint_every", None)
    trainer = Trainer(model, train_set, val_set, TrainConfig(**config))
    start = time.perf_counter()
    trainer.fit()
    with trainer.averaged_weights():
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    print(f"trained {args.model}: {trainer.step} steps on {len(train_set)} molecules in {time.perf_counter() - start:.0f} s")
    return model.eval()


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.load:
        from genkernels.train import load_model

        model = load_model(args.load).eval()
    else:
        model = train(args)
    n = 40 if args.quick else args.samples
    baselines = () if args.no_baselines or args.quick else molecules.BASELINES
    report = molecules.moses_report(model, n, baselines=baselines, progress=lambda line: print(line, flush=True))
    print(f"\nMOSES metrics, {n} samples (published rows: MOSES README, 30,000 samples, mean of 3 runs):")
    print(report["table"])
    result = {"model": model.name, "samples": n, "rows": report["rows"], "seconds": report["seconds"]}

    if getattr(model.config, "conditional", False):
        rows = molecules.conditioning_report(model, {"qed": [0.6, 0.9], "logp": [1.0, 4.0]}, n=20 if args.quick else 500)
        print("\nproperty-conditioned samples vs unconditional (MAE to the target, fraction within tolerance):")
        print(molecules.format_conditioning(rows))
        result["conditioning"] = rows
    if model.name == "smiles-vae":
        test = load_moses_smiles("test")[: 4 if args.quick else 50]
        found = model.optimize_latent(test, "qed", steps=5 if args.quick else 100,
                                      training_smiles=load_moses_smiles("train"))
        print(f"\nlatent optimisation of QED from {found['num_start']} test molecules: {found['start_mean']:.3f} -> "
              f"{found['end_mean']:.3f} (valid {found['fraction_valid']:.2f}, novel {found['num_novel']})")
        result["optimize_latent"] = {k: v for k, v in found.items() if k != "best"}

    figures = molecules.sample_figures(report["generated"], reference={"test": load_moses_smiles("test")[:5000]})
    written = save_figures(figures, out)
    (out / "samples.smi").write_text("\n".join(report["generated"]) + "\n")
    (out / "moses.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {', '.join(written)}, {out / 'samples.smi'}, {out / 'moses.json'}")


if __name__ == "__main__":
    main()

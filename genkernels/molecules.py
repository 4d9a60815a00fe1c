"""Molecule generation, measured: the MOSES table of a SMILES model beside the published rows and
simple baselines, property-conditioned generation against its targets, and the figures.

    report = moses_report(model, n=30_000)          # {"rows": {...}, "generated": [...], ...}
    print(report["table"])

Rows of the table (`moses_report`):
  published    MOSES's results table (genkernels.metrics.molecules.PUBLISHED_MOSES: Train, HMM, NGram,
               Combinatorial, CharRNN, AAE, VAE, JTN-VAE, LatentGAN; mean of 3 runs of 30,000 samples)
  baselines    computed here on the same splits and sample count (`baseline_samples`):
               "train sample"  n molecules drawn from the training split (what a model that memorised
                               the data would score: novelty 0, FCD near the train row)
               "ngram (ours)"  a Witten-Bell n-gram model over SMILES tokens (genkernels.metrics.ngram)
                               fitted on ngram_items training molecules, sampled token by token
  the model    model.sample_smiles(n) scored by genkernels.metrics.molecules.moses_metrics

Property-conditioned generation (`conditioning_report`): for each target value of a property
(QED, logP or SA), n samples conditioned on it and n unconditional ones; RDKit measures the
property of the valid samples; reported are the mean absolute error to the target, the fraction
within a tolerance and the validity, for both, so the effect of the condition is read directly.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from genkernels.models._validate import check_choice, check_int, check_real

TABLE_KEYS = ("valid", "unique@1000", "unique@10000", "novelty", "fcd/test", "fcd/testsf", "snn/test",
              "frag/test", "scaf/test", "scaf/testsf", "intdiv", "filters")
TOLERANCES = {"qed": 0.1, "logp": 0.5, "sa": 0.5}  # "within" for conditioning_report
BASELINES = ("train sample", "ngram (ours)")


def baseline_samples(name: str, n: int, *, seed: int = 0, ngram_order: int = 6, ngram_items: int = 100_000,
                     max_len: int = 100) -> list[str]:
    """n SMILES from a simple baseline on the MOSES training split (see the module docstring)."""
    from genkernels.data.smiles import MosesDataset, SmilesTokenizer

    name = check_choice("name", name, BASELINES)
    n = check_int("n", n, 1)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    if name == "train sample":
        train = MosesDataset("train").smiles
        return [train[i] for i in rng.choice(len(train), size=min(n, len(train)), replace=False)]
    from genkernels.metrics.ngram import NGramModel

    data = MosesDataset("train", max_items=check_int("ngram_items", ngram_items, 1), seed=seed)
    tokenizer: SmilesTokenizer = data.tokenizer
    model = NGramModel(check_int("ngram_order", ngram_order, 1), tokenizer.vocab_size, tokenizer.BOS, tokenizer.EOS)
    model.fit(tokenizer.encode(s, bos=False, eos=False) for s in data.smiles)
    return [tokenizer.decode(ids) for ids in model.sample(n, max_len, seed=seed)]


def _progress(message: str, progress: Callable[[str], None] | None) -> None:
    if progress is not None:
        progress(message)


def moses_report(model=None, n: int = 30_000, *, generated: Sequence[str] | None = None, name: str | None = None,
                 baselines: Sequence[str] = BASELINES, published: bool = True, seed: int = 0, n_jobs: int = 1,
                 device: str = "cpu", temperature: float = 1.0,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The MOSES metrics of `model` (or of the `generated` SMILES) beside the baselines and published rows.

    Returns {"rows": {row name: metrics}, "table": text, "generated": the model's SMILES,
    "seconds": {"sample": s, "metrics": s, ...}}. The model row is named `name` (default the
    model's registry name).
    """
    import torch

    from genkernels.metrics.molecules import PUBLISHED_MOSES, format_moses_table, moses_metrics

    n = check_int("n", n, 1)
    if generated is None:
        if model is None or not callable(getattr(model, "sample_smiles", None)):
            raise TypeError(f"model must be a SMILES model with sample_smiles (smiles-lstm, smiles-gpt, smiles-vae), "
                            f"got {type(model).__name__}")
        _progress(f"sampling {n} molecules from {model.name}", progress)
        torch.manual_seed(check_int("seed", seed, 0))
        start = time.perf_counter()
        generated = model.sample_smiles(n, temperature=check_real("temperature", temperature, 0.0),
                                        progress=progress is not None)
        seconds = {"sample": time.perf_counter() - start}
    else:
        generated, seconds = [str(s) for s in generated], {}
    name = name or getattr(model, "name", "generated")
    rows: dict[str, dict[str, float]] = {}
    if published:
        rows.update({f"{key} (MOSES)": values for key, values in PUBLISHED_MOSES.items()})
    for baseline in baselines:
        _progress(f"baseline {baseline}: {n} molecules", progress)
        start = time.perf_counter()
        samples = baseline_samples(baseline, n, seed=seed)
        rows[baseline] = moses_metrics(samples, n_jobs=n_jobs, device=device)
        seconds[baseline] = time.perf_counter() - start
    _progress(f"MOSES metrics of {len(generated)} molecules", progress)
    start = time.perf_counter()
    rows[name] = moses_metrics(generated, n_jobs=n_jobs, device=device)
    seconds["metrics"] = time.perf_counter() - start
    keys = [k for k in TABLE_KEYS if any(k in values for values in rows.values())]
    return {"rows": rows, "table": format_moses_table(rows, keys), "generated": list(generated), "seconds": seconds}


def conditioning_report(model, targets: Mapping[str, Sequence[float]], n: int = 200, *, seed: int = 0,
                        temperature: float = 1.0) -> list[dict[str, Any]]:
    """How close property-conditioned samples land to their targets, beside unconditional samples.

    targets  {"qed" | "logp" | "sa": [target values]}; the model must be conditional
             (model.config.conditional) and take the property as a sample_smiles keyword.
    Returns one row per (property, target): property, target, and for "conditioned" and
    "unconditional" samples: valid (fraction), mean (of the valid ones), mae (mean |value - target|),
    within (fraction of valid samples within TOLERANCES[property] of the target).
    """
    import torch

    from genkernels.chem import mol_properties

    if not getattr(getattr(model, "config", None), "conditional", False):
        raise ValueError(f"conditioning_report needs a model trained with conditional=True, got {type(model).__name__} "
                         "without it (genkernels train smiles-lstm --set conditional=true)")
    n = check_int("n", n, 1)
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError(f"targets must be a non-empty dict property -> values, got {targets!r:.80}")

    def measured(samples, prop):
        values = mol_properties(samples)[prop]
        ok = np.isfinite(values)
        return values[ok], float(ok.mean())

    torch.manual_seed(check_int("seed", seed, 0))
    unconditional = model.sample_smiles(n, temperature=temperature)
    rows = []
    for prop, values in targets.items():
        prop = check_choice("targets key", prop, tuple(TOLERANCES))
        base, base_valid = measured(unconditional, prop)
        for target in values:
            target = float(target)
            torch.manual_seed(seed)
            conditioned, valid = measured(model.sample_smiles(n, temperature=temperature, **{prop: target}), prop)
            row: dict[str, Any] = {"property": prop, "target": target}
            for label, got, fraction in (("conditioned", conditioned, valid), ("unconditional", base, base_valid)):
                err = np.abs(got - target)
                row[label] = {"valid": fraction, "mean": float(got.mean()) if got.size else float("nan"),
                              "mae": float(err.mean()) if got.size else float("nan"),
                              "within": float((err <= TOLERANCES[prop]).mean()) if got.size else float("nan")}
            rows.append(row)
    return rows


def format_conditioning(rows: Sequence[Mapping[str, Any]]) -> str:
    """conditioning_report rows as a text table."""
    lines = [f"{'property':8}  {'target':>7}  {'cond. mean':>10}  {'MAE':>6}  {'within':>6}  {'valid':>5}   "
             f"{'uncond. mean':>12}  {'MAE':>6}  {'within':>6}"]
    for row in rows:
        c, u = row["conditioned"], row["unconditional"]
        lines.append(f"{row['property']:8}  {row['target']:7.2f}  {c['mean']:10.3f}  {c['mae']:6.3f}  {c['within']:6.3f}  "
                     f"{c['valid']:5.3f}   {u['mean']:12.3f}  {u['mae']:6.3f}  {u['within']:6.3f}")
    return "\n".join(lines)


def sample_figures(generated: Sequence[str], *, reference: Mapping[str, Sequence[str]] | None = None,
                   count: int = 24, nrow: int = 6) -> dict[str, Any]:
    """{"molecules": the first `count` valid samples drawn by RDKit with their QED,
    "properties": logP / SA / QED / weight histograms of the samples beside `reference` sets}."""
    from genkernels.chem import canonical_smiles, draw_molecules, mol_properties, property_figure

    valid = [s for s in generated if canonical_smiles(s) is not None][:check_int("count", count, 1)]
    figures: dict[str, Any] = {}
    if valid:
        qed = mol_properties(valid)["qed"]
        figures["molecules"] = draw_molecules(valid, [f"QED {q:.2f}" for q in qed], nrow=nrow)
    sets = {"samples": list(generated)}
    sets.update({k: list(v) for k, v in (reference or {}).items()})
    figures["properties"] = property_figure(sets)
    return figures


__all__ = ["BASELINES", "TABLE_KEYS", "TOLERANCES", "baseline_samples", "conditioning_report", "format_conditioning",
           "moses_report", "sample_figures"]

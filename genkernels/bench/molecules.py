"""`genkernels bench --suite molecules`: SMILES sampling throughput and MOSES metric time.

sampling  SMILES per second of smiles-lstm and smiles-gpt (random weights of the default sizes;
          every provider draws the same molecules from the same seed, checked before timing):
            smiles-lstm  genkernels.nn.LSTM (fused cell, state carried) vs torch.nn.LSTM with the same
                         weights in the same loop (cuDNN / oneDNN), and vs re-running the prefix
            smiles-gpt   KV cache (prefill + decode_step) vs re-running the prefix every token
          A random model ends a molecule when it draws EOS (~1 in 28 per token here), so the rows
          also give tokens per second, which do not depend on the molecules' lengths.
metrics   wall time of genkernels.metrics.molecules.moses_metrics on n MOSES test molecules taken as
          "generated" (the precomputed test statistics of the wheel, as MOSES), per metric group.
"""
from __future__ import annotations

import time

import torch

SAMPLING_COLUMNS = ["model", "provider", "batch", "molecules_per_s", "tokens_per_s", "speedup"]
METRIC_COLUMNS = ["molecules", "n_jobs", "seconds"]


class _TorchLSTM(torch.nn.Module):
    """torch.nn.LSTM holding the weights of a genkernels.nn.LSTM, with its call signature."""

    def __init__(self, ours):
        super().__init__()
        self.inner = torch.nn.LSTM(ours.input_size, ours.hidden_size, ours.num_layers, batch_first=True)
        self.inner.load_state_dict({k: v for k, v in ours.state_dict().items() if k in self.inner.state_dict()})

    def forward(self, x, state=None):
        return self.inner(x, state)


def _time(fn, repeat: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up, and the output the others must equal
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat, out


def _rows_for(name: str, providers: dict, batch: int, repeat: int) -> list[dict]:
    rows, reference = [], None
    for provider, fn in providers.items():
        seconds, out = _time(fn, repeat)
        if reference is None:
            reference = out
        elif not torch.equal(out, reference):
            raise AssertionError(f"molecules bench: {name} {provider} drew other tokens than {next(iter(providers))}")
        tokens = int((out != 0).sum())  # PAD is 0: the tokens drawn, EOS included
        rows.append({"model": name, "provider": provider, "batch": batch, "molecules_per_s": batch / seconds,
                     "tokens_per_s": tokens / seconds, "seconds": seconds})
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = base / row.pop("seconds")
    return rows


def sampling_rows(device, batch: int = 256, repeat: int = 2, tiny: bool = False) -> list[dict]:
    from genkernels.data.smiles import SmilesTokenizer
    from genkernels.models.smiles_gpt import SmilesGPT, SmilesGPTConfig
    from genkernels.models.smiles_lstm import SmilesLSTM, SmilesLSTMConfig

    tokenizer = SmilesTokenizer.fit(["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C[NH3+]", "ClBr#N[C@@H]"]) if tiny \
        else SmilesTokenizer.moses()
    common = {"tokenizer_json": tokenizer.to_json(), "max_len": 12 if tiny else 57}
    rows = []
    torch.manual_seed(0)
    lstm_config = SmilesLSTMConfig(**common, **({"hidden_size": 8, "embed_dim": 8} if tiny else {}))
    lstm = SmilesLSTM(lstm_config).to(device).eval()
    prompts = lstm.prompts(batch).to(device)
    new = lstm.config.max_len - 1
    ours_lstm, plain = lstm.lstm, _TorchLSTM(lstm.lstm).to(device)

    def lstm_with(module, cache=True):
        def run():
            lstm.lstm = module
            try:
                with torch.no_grad():
                    return lstm.generate(prompts, new, 1.0, seed=0, cache=cache)
            finally:
                lstm.lstm = ours_lstm
        return run

    rows += _rows_for("smiles-lstm", {"torch.nn.LSTM, state carried": lstm_with(plain),
                                      "genkernels.nn.LSTM, state carried": lstm_with(ours_lstm),
                                      "genkernels.nn.LSTM, prefix re-run": lstm_with(ours_lstm, cache=False)},
                      batch, repeat)
    torch.manual_seed(0)
    gpt = SmilesGPT(SmilesGPTConfig(**common, **({"dim": 16, "depth": 1, "num_heads": 2} if tiny else {})))
    gpt = gpt.to(device).eval()

    def gpt_run(cache):
        def run():
            with torch.no_grad():
                return gpt.generate(prompts, new, 1.0, seed=0, cache=cache)
        return run

    rows += _rows_for("smiles-gpt", {"prefix re-run": gpt_run(False), "KV cache": gpt_run(True)}, batch, repeat)
    return rows


def metric_rows(n: int = 30_000, n_jobs: int = 1, device="cpu") -> list[dict]:
    from genkernels.data.smiles import load_moses_smiles
    from genkernels.metrics.molecules import moses_metrics, precomputed_statistics

    precomputed_statistics("test"), precomputed_statistics("test_scaffolds"), load_moses_smiles("train")  # loads
    generated = load_moses_smiles("test")[:n]
    start = time.perf_counter()
    metrics = moses_metrics(generated, n_jobs=n_jobs, device=str(device))
    return [{"molecules": len(generated), "n_jobs": n_jobs, "seconds": time.perf_counter() - start,
             "valid": metrics["valid"], "fcd/test": metrics["fcd/test"], "snn/test": metrics["snn/test"]}]


def run_suite(device, batch: int = 256, metric_molecules: int = 30_000, n_jobs: int = 1) -> dict:
    result = {"sampling": sampling_rows(device, batch)}
    if metric_molecules:
        result["metrics"] = metric_rows(metric_molecules, n_jobs, device)
    return result

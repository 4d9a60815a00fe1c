"""pytest-benchmark cases of the `generation` suite (genkernels/bench/generation.py, where the
method is described): GPT cached generation at 128/512/2048 new tokens, one recompute step (the
whole-context forward generate_uncached runs per token) at the contexts those lengths end at, the
fused linear + cross-entropy against materialised logits at V = 32k/64k/128k, and one GPT training
step, eager and with the loss under torch.compile.

Run:  OMP_NUM_THREADS=1 python -m pytest bench/bench_generation.py --benchmark-group-by=func
The table with the ratios (cached vs recompute tokens/s, memory) is `genkernels bench --suite generation`.
"""
import copy

import pytest
import torch

from genkernels.bench import generation
from genkernels.bench.transformer_ops import _lce_inputs, _lce_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_MODELS = {}


def _model(context):
    if context not in _MODELS:
        _MODELS[context] = generation._model({}, context, DEVICE)
    return _MODELS[context]


@pytest.mark.parametrize("tokens", generation.LENGTHS)
def test_generate_cached(benchmark, tokens):
    model = _model(generation.PROMPT + max(generation.LENGTHS))
    prompt = torch.randint(0, 256, (1, generation.PROMPT), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    out = benchmark.pedantic(lambda: model.generate(prompt, tokens, temperature=0), rounds=2, iterations=1,
                             warmup_rounds=1)
    assert len(out[0]) == tokens
    benchmark.extra_info.update(tokens=tokens, prompt=generation.PROMPT, threads=torch.get_num_threads())


@pytest.mark.parametrize("context", [generation.PROMPT + n - 1 for n in generation.LENGTHS])
def test_recompute_step(benchmark, context):
    """One generate_uncached step at this context: its tokens/s at length n is about 2 / (this step's
    time at the prompt + this time at the end) (the integrated estimate of the suite)."""
    model = _model(generation.PROMPT + max(generation.LENGTHS))
    seq = torch.randint(0, 256, (1, context), generator=torch.Generator().manual_seed(1)).to(DEVICE)

    @torch.no_grad()
    def step():
        return (model.hidden(seq)[:, -1] @ model.head_weight.t()).argmax(dim=-1)

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(context=context, threads=torch.get_num_threads())


@pytest.mark.parametrize("provider", ["materialised", "chunked", "chunked_recompute"])
@pytest.mark.parametrize("shape", generation.LCE_SHAPES, ids=[f"V{s[2]}" for s in generation.LCE_SHAPES])
def test_linear_cross_entropy(benchmark, shape, provider):
    """Time only; the peak memory of each provider is the suite's (measured in fresh processes)."""
    h, w, t = _lce_inputs(*shape, DEVICE)
    benchmark.pedantic(lambda: _lce_step(provider, h, w, t), rounds=2, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(shape=list(shape), threads=torch.get_num_threads())


@pytest.mark.parametrize("provider", ["eager", "compile"])
def test_train_step(benchmark, provider):
    batch, seq_len = generation.TRAIN
    model = copy.deepcopy(_model(seq_len)).train()
    data = torch.randint(0, 256, (batch, seq_len + 1), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    loss_fn = lambda b: model.loss(b)["loss"]  # noqa: E731
    if provider == "compile":
        loss_fn = torch.compile(loss_fn)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss_fn(data).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(tokens_per_step=batch * seq_len, threads=torch.get_num_threads())

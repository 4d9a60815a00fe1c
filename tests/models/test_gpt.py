"""GPT: cached generation equals re-running the context, sampling controls, training, errors."""
import math

import pytest
import torch

from genkernels.models.gpt import GPT, GPTConfig

TINY = dict(context=48, dim=32, depth=2, num_heads=4)
PROMPTS = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11, 12, 13], [42], [200, 100, 50, 25, 12]]


def _model(seed=0, **overrides) -> GPT:
    """A tiny GPT with weights larger than the init's, so greedy outputs vary (a fresh tied model
    mostly echoes its last token, which would make the comparisons below weak)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3 if p.dim() > 1 and "embed" not in name else 1.0)
    return model


@pytest.mark.parametrize("overrides", [
    {},
    {"num_kv_heads": 2},
    {"num_kv_heads": 1, "positions": "learned", "mlp": "gelu", "norm": "layer", "tie_embeddings": False,
     "bias": True},
])
def test_cached_generation_equals_uncached_greedy(overrides):
    model = _model(**overrides)
    cached = model.generate(PROMPTS, 24, temperature=0)
    reference = model.generate_uncached(PROMPTS, 24)
    assert cached == reference
    assert all(len(out) == 24 for out in cached)
    assert len({t for out in cached for t in out}) > 8  # not a degenerate repetition
    # a (B, T) tensor of equal-length prompts works too
    tensor_prompts = torch.tensor([p[:1] for p in PROMPTS])
    assert model.generate(tensor_prompts, 5, temperature=0) == model.generate_uncached(tensor_prompts, 5)


def test_batched_equals_one_at_a_time():
    model = _model()
    batched = model.generate(PROMPTS, 10, temperature=0)
    assert batched == [model.generate([p], 10, temperature=0)[0] for p in PROMPTS]


def test_stop_tokens_and_stream():
    model = _model()
    full = model.generate(PROMPTS, 16, temperature=0)
    stop = full[1][3]  # sequence 1 stops at its 4th token (or earlier, if it came before)
    seen = []
    out = model.generate(PROMPTS, 16, temperature=0, stop_tokens=[stop],
                         stream=lambda step, tokens: seen.append((step, tokens.clone())))
    for b, (o, f) in enumerate(zip(out, full)):
        cut = f.index(stop) + 1 if stop in f else len(f)
        assert o == f[:cut], b
    assert len(out[1]) <= 4
    steps = [s for s, _ in seen]
    assert steps == list(range(len(steps)))
    for b, o in enumerate(out):
        streamed = [int(t[b]) for _, t in seen if int(t[b]) >= 0]
        assert streamed == o
    assert all(t.shape == (len(PROMPTS),) and t.dtype == torch.int64 for _, t in seen)


def test_sampling_controls():
    model = _model()
    greedy = model.generate(PROMPTS, 12, temperature=0)
    assert model.generate(PROMPTS, 12, temperature=0.7, top_k=1, seed=3) == greedy
    assert model.generate(PROMPTS, 12, temperature=1.0, top_p=1e-6, seed=3) == greedy  # nucleus of one token
    a = model.generate(PROMPTS, 12, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    b = model.generate(PROMPTS, 12, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    c = model.generate(PROMPTS, 12, temperature=1.0, top_k=20, top_p=0.9, seed=8)
    assert a == b and a != c


def test_sample_returns_prompt_and_bytes():
    model = _model()
    out = model.sample(3, prompt="def f(", max_new_tokens=10, seed=0)
    assert out.shape == (3, 16) and out.dtype == torch.int64
    assert bytes(out[0, :6].tolist()) == b"def f("
    assert torch.equal(out, model.sample(3, prompt="def f(", max_new_tokens=10, seed=0))
    assert "samples.txt" in model.sample_files(out.float())
    assert GPT.sample_conditions() == ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]


def test_loss_decreases_on_tiny_text():
    torch.manual_seed(0)
    text = b"def add(a, b):\n    return a + b\n\n" * 8
    data = torch.tensor(list(text), dtype=torch.int64)
    model = GPT(GPTConfig(**TINY))
    windows = torch.stack([data[i:i + 33] for i in range(0, len(data) - 33, 7)])  # (N, 33)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model.loss(windows)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[0] == pytest.approx(math.log(256), abs=0.3)
    assert losses[-1] < 0.6 * losses[0], losses
    assert out["bits_per_byte"].item() == pytest.approx(losses[-1] / math.log(2), rel=1e-6)
    # the fused loss equals cross-entropy on the plain forward's logits
    with torch.no_grad():
        logits = model(windows[:, :-1])
        reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), windows[:, 1:].reshape(-1))
        assert model.loss(windows)["loss"].item() == pytest.approx(reference.item(), rel=1e-5)
        assert model.log_prob(windows).sum().item() == pytest.approx(-reference.item() * windows[:, 1:].numel(),
                                                                     rel=1e-5)


def test_evaluate_reports_bits_per_byte():
    from genkernels.data.text import TextDataset

    model = _model()
    dataset = TextDataset("stdlib", "test", block_size=32, max_bytes=2000)
    metrics = model.evaluate(dataset, max_items=4, batch_size=2)
    assert set(metrics) == {"loss", "bits_per_byte", "zlib_bits_per_byte", "lzma_bits_per_byte"}
    assert 0 < metrics["bits_per_byte"] < 100
    config = GPT.config_for_data(dataset, {"dim": 32, "depth": 1, "num_heads": 4})
    assert config.context == 32 and config.vocab_size == 256


def test_bad_inputs_raise_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="prompt_tokens\\[1\\] is empty"):
        model.generate([[1], []], 3)
    with pytest.raises(ValueError, match="outside \\[0, vocab_size"):
        model.generate([[1, 256]], 3)
    with pytest.raises(TypeError, match="prompt_tokens"):
        model.generate("hello", 3)
    with pytest.raises(ValueError, match="prompt_tokens must be a \\(B, T\\) integer"):
        model.generate(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="exceed the context"):
        model.generate([[1] * 40], 9)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([[1]], -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate([[1]], 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate([[1]], 3, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        model.generate([[1]], 3, top_k=0)
    with pytest.raises(TypeError, match="stop_tokens"):
        model.generate([[1]], 3, stop_tokens=["a"])
    with pytest.raises(TypeError, match="stream"):
        model.generate([[1]], 3, stream=5)
    with pytest.raises(ValueError, match="batch must be an int64 tensor"):
        model.loss(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="more than the context"):
        model.loss(torch.zeros(2, 50, dtype=torch.int64))
    model.loss(torch.zeros(2, 49, dtype=torch.int64))  # context + 1 (inputs and shifted targets) is fine
    with pytest.raises(ValueError, match="divisible by num_heads"):
        GPTConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        GPTConfig(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="GPTConfig.mlp"):
        GPTConfig(mlp="relu")
    with pytest.raises(ValueError, match="GPTConfig.positions"):
        GPTConfig(positions="alibi")
    assert model.generate([[1], [2, 3]], 0) == [[], []]

"""Seq2SeqTransformer: cached decoding equals re-running the prefix (greedy and beam), padding never
leaks, training beats the unigram baseline, evaluation / sampling / config, errors."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from genkernels.data.seq2seq_tasks import EOS, PAD, Seq2SeqTaskDataset, encode
from genkernels.models import REGISTRY, get_model_class
from genkernels.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

TINY = dict(dim=32, num_heads=4, max_src_len=12, max_tgt_len=12)
SOURCES = ["12+3", "9*9-4", "1", "(3+4)*5-2", "77", "3-1", "abc", "0123456789"]  # different lengths


def _model(seed=2, **overrides) -> Seq2SeqTransformer:
    """A tiny model with weights larger than the init's, so the decoded tokens vary and EOS comes at
    different steps for different sources (a fresh model repeats one token and never stops)."""
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(Seq2SeqConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3 if p.dim() > 1 and "embed" not in name else 0.15)
        model.embed.weight[EOS] *= 2.0
    return model


CONFIGS = [(2, {}), (2, {"positions": "learned", "norm": "layer", "mlp": "gelu", "bias": True, "encoder_depth": 1,
                     "decoder_depth": 3})]  # (seed, config): seeds whose outputs vary


@pytest.mark.parametrize("seed, overrides", CONFIGS)
def test_cached_greedy_equals_uncached(seed, overrides):
    model = _model(seed, **overrides)
    cached = model.greedy_decode(SOURCES)
    assert cached == model.greedy_decode(SOURCES, use_cache=False)
    assert len({len(c) for c in cached}) >= 3  # stops at different steps
    assert len({t for c in cached for t in c}) >= 5
    # batched equals one source at a time: the source padding reaches nothing
    assert cached == [model.greedy_decode([s])[0] for s in SOURCES]
    assert model.greedy_decode(SOURCES, max_len=3) == [c[:3] for c in cached]


@pytest.mark.parametrize("seed, overrides", CONFIGS)
def test_cached_beam_search_equals_uncached(seed, overrides):
    model = _model(seed, **overrides)
    for beam_size, penalty in ((3, 0.6), (5, 0.0)):
        cached = model.beam_search(SOURCES, beam_size, length_penalty=penalty)
        assert cached == model.beam_search(SOURCES, beam_size, length_penalty=penalty, use_cache=False)
        assert cached == [model.beam_search([s], beam_size, length_penalty=penalty)[0] for s in SOURCES]
    assert model.beam_search(SOURCES, 1) == model.greedy_decode(SOURCES)


def test_beam_search_finds_higher_likelihood_than_greedy():
    """Beam search with no length penalty never returns a less likely hypothesis than greedy."""
    model = _model()

    @torch.no_grad()
    def log_prob(source, tokens):
        src = torch.tensor([encode(source)])
        tgt = torch.tensor([[1, *tokens, EOS]])
        logits = model(src, tgt[:, :-1]).log_softmax(-1)
        return float(logits.gather(-1, tgt[:, 1:, None]).sum())

    greedy = model.greedy_decode(SOURCES)
    beams = model.beam_search(SOURCES, 4, length_penalty=0.0)
    for source, g, b in zip(SOURCES, greedy, beams):
        if len(g) < TINY["max_tgt_len"] - 1 and len(b) < TINY["max_tgt_len"] - 1:  # both finished
            assert log_prob(source, b) >= log_prob(source, g) - 1e-4


def test_generate_strings_and_tokens():
    model = _model()
    strings = model.generate(SOURCES[:3], beam_size=2)
    assert all(isinstance(s, str) for s in strings)
    tokens = model.generate([encode(s) for s in SOURCES[:3]], beam_size=2)
    assert [model.generate([s])[0] for s in SOURCES[:3]] == [
        "".join(Seq2SeqTaskDataset.vocab[t] for t in ts) for ts in model.greedy_decode(SOURCES[:3])]
    assert len(tokens) == 3 and all(isinstance(t, list) for t in tokens)


def test_padding_is_ignored():
    """Source padding changes no logit (key padding mask), and target padding no loss (ignore_index)."""
    model = _model(seed=0)
    short, long = torch.tensor([encode("12+3")]), torch.tensor([encode("(3+4)*5-2")])
    tgt = torch.tensor([[1, *encode("15"), EOS]])
    alone = model(short, tgt)
    padded = torch.full((2, long.shape[1]), PAD)
    padded[0, :4], padded[1] = short[0], long[0]
    together = model(padded, torch.cat([tgt, tgt]))
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)

    data = Seq2SeqTaskDataset("arithmetic", "val", size=16)
    model = Seq2SeqTransformer(Seq2SeqTransformer.config_for_data(data, {"dim": 32}))
    src, tgt = default_collate([data[i] for i in range(16)])
    loss = model.loss((src, tgt))["loss"]
    logits = model(src, tgt[:, :-1])
    targets = tgt[:, 1:].masked_fill(tgt[:, 1:] == PAD, -100)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()), atol=1e-5, rtol=1e-5)
    wider = torch.cat([tgt, torch.full((16, 3), PAD)], dim=1)  # more padding columns: the same loss
    model.config.max_tgt_len += 3
    torch.testing.assert_close(model.loss((src, wider))["loss"], loss)


def test_training_beats_the_unigram_baseline():
    """A few dozen steps on `sort` take the held-out loss below the entropy of the target tokens'
    unigram distribution (the best loss that ignores the source) and the initial loss."""
    torch.manual_seed(0)
    train = Seq2SeqTaskDataset("sort", "train", size=2000, max_len=6)
    val = Seq2SeqTaskDataset("sort", "val", size=200, max_len=6)
    model = Seq2SeqTransformer(Seq2SeqTransformer.config_for_data(train, {"dim": 32, "num_heads": 2}))
    val_batch = default_collate([val[i] for i in range(len(val))])
    counts = Counter(t for row in val_batch[1][:, 1:].tolist() for t in row if t != PAD)
    total = sum(counts.values())
    unigram = -sum(c / total * math.log(c / total) for c in counts.values())
    with torch.no_grad():
        initial = float(model.loss(val_batch)["loss"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        index = torch.randint(0, len(train), (64,), generator=generator)
        loss = model.loss(default_collate([train[i] for i in index.tolist()]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = float(model.loss(val_batch)["loss"])
    assert final < unigram - 0.3 < initial, (initial, unigram, final)
    metrics = model.evaluate(val, max_items=64, beam_size=2)
    assert set(metrics) == {"exact_match", "exact_match_beam2", "token_accuracy", "majority_answer_exact_match",
                            "copy_source_exact_match"}
    assert metrics["token_accuracy"] > 0.4
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_sample_and_files():
    data = Seq2SeqTaskDataset("reverse", "test", size=4)
    model = Seq2SeqTransformer(Seq2SeqTransformer.config_for_data(data, {"dim": 32})).eval()
    assert model.config.task == "reverse" and model.config.max_src_len == data.max_src_len
    samples = model.sample(3)
    assert samples.shape == (3, 3, max(data.max_src_len, data.max_tgt_len))
    text = model.sample_files(samples)["samples.txt"].decode().splitlines()
    assert len(text) == 3 and text[0].startswith(data.problems[0][0] + " -> ")
    assert f"target {data.problems[0][1]}" in text[0]
    text = model.sample_files(model.sample(2, problems=["ab", "xyz"], beam_size=2))["samples.txt"].decode()
    assert text.startswith("ab -> ") and "target" not in text
    assert model.sample_conditions() == ["problems", "split", "beam_size", "seed"]


def test_registry_and_config_for_data():
    assert REGISTRY["seq2seq"] == "genkernels.models.seq2seq:Seq2SeqTransformer"
    assert get_model_class("seq2seq") is Seq2SeqTransformer
    data = Seq2SeqTaskDataset("arithmetic", "test", size=4)
    config = Seq2SeqTransformer.config_for_data(data, {"max_src_len": 40})
    assert config.max_src_len == 40 and config.max_tgt_len == data.max_tgt_len and config.task == "arithmetic"
    with pytest.raises(ValueError, match="seq2seq trains on seq2seq data"):
        Seq2SeqTransformer.config_for_data(torch.utils.data.TensorDataset(torch.zeros(2)))
    small = Seq2SeqTransformer(Seq2SeqConfig(dim=16, num_heads=2, max_src_len=4))
    with pytest.raises(ValueError, match="max_src_len = 10, more than this model's 4"):
        small.check_dataset(data)


def test_errors():
    with pytest.raises(ValueError, match="dim .* divisible by num_heads"):
        Seq2SeqConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="positions must be one of"):
        Seq2SeqConfig(positions="rope")
    with pytest.raises(TypeError, match="encoder_depth must be an int"):
        Seq2SeqConfig(encoder_depth=2.0)
    with pytest.raises(ValueError, match="task must be one of"):
        Seq2SeqConfig(task="copy")
    with pytest.raises(ValueError, match="must differ"):
        Seq2SeqConfig(bos_id=0)
    model = _model()
    with pytest.raises(TypeError, match="wrap it in a list"):
        model.greedy_decode("12+3")
    with pytest.raises(TypeError, match=r"src\[1\] must be a str or a list of int"):
        model.greedy_decode([[3, 4], [1.5]])
    with pytest.raises(ValueError, match=r"src\[0\] has 13 tokens"):
        model.greedy_decode(["1" * 13])
    with pytest.raises(ValueError, match="character '/'"):
        model.greedy_decode(["8/2"])
    with pytest.raises(ValueError, match="src must be an int64 tensor"):
        model.greedy_decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="src row 1 is all padding"):
        model.greedy_decode(torch.tensor([[4, 5], [0, 0]]))
    with pytest.raises(ValueError, match="src must lie in"):
        model.greedy_decode(torch.tensor([[4, 99]]))
    with pytest.raises(ValueError, match="max_len must be <= max_tgt_len - 1 = 11"):
        model.greedy_decode(["1"], max_len=12)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        model.beam_search(["1"], 0)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        model.beam_search(["1"], 2, length_penalty=-1.0)
    with pytest.raises(TypeError, match="use_cache must be True or False"):
        model.greedy_decode(["1"], use_cache=1)
    with pytest.raises(ValueError, match="batch must be a pair"):
        model.loss(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch tgt must have 1 to 12 positions"):
        model.loss((torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 13, dtype=torch.int64)))
    with pytest.raises(ValueError, match="no task"):
        model.sample(2)
    with pytest.raises(ValueError, match="fewer than n = 3"):
        model.sample(3, problems=["1+1"])

"""BERT: the 80/10/10 masking rule, loss on masked positions only, padding invariance, a tiny
training run against the unigram baseline, fill-mask, sampling, registry and errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from genkernels.models import get_model_class
from genkernels.models.bert import BERT, BERTConfig, IGNORE_INDEX

TINY = dict(context=48, dim=32, depth=2, num_heads=4)


def _model(seed=0, **overrides) -> BERT:
    """A tiny BERT with weights larger than the init's, so outputs vary across positions."""
    torch.manual_seed(seed)
    model = BERT(BERTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.2)
    return model


def test_mask_tokens_follows_80_10_10():
    model = _model()
    c = model.config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (64, 40), generator=generator)
    ids[:, 0], ids[:, -1] = c.cls_id, c.sep_id
    attention_mask = torch.ones_like(ids)
    attention_mask[:, 30:] = 0
    ids[:, 30:-1] = c.pad_id
    inputs, labels = model.mask_tokens(ids, attention_mask, generator)
    chosen = labels != IGNORE_INDEX
    maskable = attention_mask.bool()
    maskable[:, 0] = False
    assert not chosen[~maskable].any()  # specials and padding are never chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])
    n = int(maskable.sum())
    assert abs(chosen.sum().item() / n - 0.15) < 0.015
    picked = chosen.sum().item()
    became_mask = (inputs[chosen] == c.mask_id).float().mean().item()
    changed = ((inputs[chosen] != c.mask_id) & (inputs[chosen] != ids[chosen])).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    spread = 4 * math.sqrt(0.1 * 0.9 / picked)
    assert abs(became_mask - 0.8) < spread and abs(changed - 0.1 * 255 / 256) < spread
    assert abs(kept - (0.1 + 0.1 / 256)) < spread
    random_tokens = inputs[chosen & (inputs != c.mask_id) & (inputs != ids)]
    assert random_tokens.numel() and int(random_tokens.max()) < 256  # random tokens are never special
    again = model.mask_tokens(ids, attention_mask, torch.Generator().manual_seed(0))
    assert torch.equal(model.mask_tokens(ids, attention_mask, torch.Generator().manual_seed(0))[1], again[1])


def test_random_replacements_skip_special_ids_anywhere():
    model = _model(vocab_size=12, pad_id=0, mask_id=3, cls_id=7, sep_id=11)
    draws = model._regular_tokens((20000,), torch.Generator().manual_seed(1), "cpu")
    assert set(draws.unique().tolist()) == {1, 2, 4, 5, 6, 8, 9, 10}


def test_at_least_one_position_is_masked():
    model = _model()
    ids = model.encode_windows(torch.tensor([[65, 66]]))
    for seed in range(20):
        _, labels = model.mask_tokens(ids, generator=torch.Generator().manual_seed(seed))
        assert (labels != IGNORE_INDEX).sum() >= 1


def test_loss_is_the_nll_of_the_masked_positions_only():
    model = _model()
    windows = torch.randint(0, 256, (4, 40), generator=torch.Generator().manual_seed(3))
    out = model.loss(windows, generator=torch.Generator().manual_seed(7))
    ids = model.encode_windows(windows)
    inputs, labels = model.mask_tokens(ids, generator=torch.Generator().manual_seed(7))
    chosen = labels != IGNORE_INDEX
    logits = model(inputs)
    expected = F.cross_entropy(logits[chosen], labels[chosen])
    assert 0 < chosen.sum() < chosen.numel() // 3
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["bits_per_masked_byte"], expected / math.log(2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", ["mask", "varlen"])
def test_padding_invariance(padding):
    """A sequence alone gives the same logits as inside a right-padded batch of longer ones."""
    model = _model(padding=padding)
    generator = torch.Generator().manual_seed(5)
    lengths = [9, 30, 17]
    seqs = [torch.randint(0, 260, (n,), generator=generator) for n in lengths]
    batch = torch.full((3, 30), model.config.pad_id)
    attention_mask = torch.zeros(3, 30, dtype=torch.long)
    for b, s in enumerate(seqs):
        batch[b, :len(s)] = s
        attention_mask[b, :len(s)] = 1
    token_types = (torch.arange(30) >= 5).long().expand(3, 30)
    logits = model(batch, attention_mask, token_types)
    for b, s in enumerate(seqs):
        alone = model(s[None], token_type_ids=token_types[:1, :len(s)])
        torch.testing.assert_close(logits[b, :len(s)], alone[0], rtol=1e-5, atol=1e-5)
    if padding == "varlen":
        assert torch.equal(model.hidden(batch, attention_mask)[0, 9:], torch.zeros(21, 32))


def test_varlen_and_mask_paths_agree_with_holes():
    """Both padding paths agree on real tokens for any mask pattern (left padding, holes)."""
    varlen, masked = _model(padding="varlen"), _model(padding="mask")
    ids = torch.randint(0, 260, (3, 20), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones(3, 20, dtype=torch.bool)
    attention_mask[0, :6] = False
    attention_mask[1, 4:9] = False
    attention_mask[2, 12:] = False
    a, b = varlen(ids, attention_mask), masked(ids, attention_mask)
    torch.testing.assert_close(a[attention_mask], b[attention_mask], rtol=1e-5, atol=1e-5)


def test_tiny_training_beats_the_unigram_baseline():
    from genkernels.data.text import TextDataset

    train = TextDataset("stdlib", "train", block_size=32, max_bytes=60_000)
    val = TextDataset("stdlib", "val", block_size=32, max_bytes=8_000)
    torch.manual_seed(0)
    model = BERT(BERTConfig(context=32, dim=32, depth=1, num_heads=2, mask_prob=0.3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    before = model.evaluate(val, max_items=48)
    for _ in range(200):
        index = torch.randint(0, len(train), (32,), generator=generator)
        loss = model.loss(torch.stack([train[int(i)] for i in index]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert int(model.token_counts.sum()) == 200 * 32 * 32  # the unigram counts come from training batches
    metrics = model.evaluate(val, max_items=48)
    assert metrics == model.evaluate(val, max_items=48)  # fixed mask seed
    assert metrics["masked_tokens"] == before["masked_tokens"]  # the same positions as before training
    assert metrics["bits_per_masked_byte"] < metrics["unigram_bits_per_masked_byte"] - 0.3
    assert metrics["bits_per_masked_byte"] < before["bits_per_masked_byte"] - 2
    assert metrics["masked_accuracy"] > metrics["unigram_masked_accuracy"] + 0.02


def test_evaluate_unigram_from_the_rest_of_the_split():
    from genkernels.data.text import TextDataset

    val = TextDataset("stdlib", "val", block_size=32, max_bytes=8_000)
    model = _model(context=32)
    metrics = model.evaluate(val, max_items=4)
    assert {"masked_accuracy", "bits_per_masked_byte", "unigram_masked_accuracy",
            "unigram_bits_per_masked_byte"} <= set(metrics)
    counts = torch.bincount(val.data.long(), minlength=260)
    given = model.evaluate(val, max_items=4, unigram_counts=counts)
    assert given["masked_accuracy"] == metrics["masked_accuracy"]
    assert model.evaluate(val, max_items=4) == metrics


@pytest.mark.parametrize("num_bytes", [1, 2])
def test_fill_mask_returns_top_k_candidates(num_bytes):
    model = _model()
    text = "def f(<mask>):"
    out = model.fill_mask(text, top_k=4, num_bytes=num_bytes)
    assert len(out) == 4
    scores = [c["score"] for c in out]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] and scores[0] <= 1
    for c in out:
        assert c["text"] == "def f(" + c["fill"] + "):"
    ids, spans = model._template(text, num_bytes)
    ids = torch.tensor([ids])
    log_probs = model._byte_log_probs(ids, spans[0][:1])[0, 0]
    if num_bytes == 1:  # one pass: the top bytes by probability
        torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), log_probs.exp().topk(4).values.double())
    else:  # the best beam's score = p(first byte) * p(second byte | first)
        first, second = out[0]["bytes"]
        ids[0, spans[0][0]] = first
        p2 = model._byte_log_probs(ids, spans[0][1:])[0, 0, second].exp()
        assert math.isclose(out[0]["score"], float(log_probs[first].exp() * p2), rel_tol=1e-4)
    many = model.fill_mask("a<mask>b<mask>c", top_k=3)
    assert len(many) == 2 and all(len(m) == 3 for m in many)
    assert many[1][0]["text"].startswith("a<mask>b")


def test_sample_fills_the_masks():
    model = _model()
    out = model.sample(3, text="x = <mask><mask>", temperature=0)
    assert out.shape == (3, 6) and out.dtype == torch.int64
    assert bytes(out[0, :4].tolist()) == b"x = " and torch.equal(out[0], out[2])
    a = model.sample(2, length=10, seed=3)
    assert a.shape == (2, 10) and torch.equal(a, model.sample(2, length=10, seed=3)) and int(a.max()) < 256
    assert model.sample(2, length=8, steps=2, seed=0).shape == (2, 8)
    files = model.sample_files(out)
    assert files["samples.txt"].startswith(b"x = ")
    assert model.sample_conditions() == ["text", "length", "steps", "temperature", "seed"]


def test_registry_and_config_for_data():
    from genkernels.data.text import TextDataset

    assert get_model_class("bert") is BERT
    data = TextDataset("stdlib", "val", block_size=64, max_bytes=5_000)
    config = BERT.config_for_data(data, {"dim": 16, "num_heads": 2})
    assert config.context == 64 and config.vocab_size == 260 and config.byte_level
    model = BERT(config)
    assert model.encode_windows(data[0][None]).shape == (1, 64)
    with pytest.raises(ValueError, match="byte-level"):
        BERT.config_for_data(data, {"vocab_size": 100, "pad_id": 0, "mask_id": 1, "cls_id": 2, "sep_id": 3})


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        BERTConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="must differ"):
        BERTConfig(mask_id=256)
    with pytest.raises(ValueError, match="pad_id must be < vocab_size"):
        BERTConfig(vocab_size=100)
    with pytest.raises(TypeError, match="BERTConfig.depth must be an int"):
        BERTConfig(depth=2.0)
    with pytest.raises(ValueError, match="mask_prob"):
        BERTConfig(mask_prob=0.0)
    model = _model()
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model(torch.tensor([[0, 300]]))
    with pytest.raises(ValueError, match="more than the context"):
        model(torch.zeros(1, 49, dtype=torch.int64))
    with pytest.raises(ValueError, match="attention_mask must hold 0"):
        model(torch.zeros(1, 4, dtype=torch.int64), torch.tensor([[1, 2, 1, 1]]))
    with pytest.raises(ValueError, match="attention_mask must be an integer or bool tensor"):
        model(torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 3))
    with pytest.raises(ValueError, match="token_type_ids must lie in"):
        model(torch.zeros(1, 4, dtype=torch.int64), token_type_ids=torch.full((1, 4), 2))
    with pytest.raises(ValueError, match="byte windows must lie in"):
        model.loss(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="at least one '<mask>'"):
        model.fill_mask("no mask here")
    with pytest.raises(ValueError, match="more than the context"):
        model.fill_mask("x" * 60 + "<mask>")
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        model.fill_mask("<mask>", top_k=0)
    with pytest.raises(TypeError, match="text must be a str"):
        model.fill_mask(b"<mask>")
    with pytest.raises(ValueError, match="must contain '<mask>'"):
        model.sample(1, text="abc")
    with pytest.raises(ValueError, match="give length only without text"):
        model.sample(1, text="<mask>", length=3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model.mask_tokens(torch.zeros(1, 3, dtype=torch.int64), generator=0)
    no_mask = _model(vocab_size=99, pad_id=0, mask_id=None, cls_id=None, sep_id=None)
    with pytest.raises(ValueError, match="needs BERTConfig.mask_id"):
        no_mask.mask_tokens(torch.ones(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="byte-level models"):
        no_mask.fill_mask("<mask>")
    with pytest.raises(ValueError, match="num_heads is required"):
        BERT.from_hf_state_dict({"embeddings.word_embeddings.weight": torch.zeros(99, 32),
                                 "encoder.layer.0.intermediate.dense.weight": torch.zeros(64, 32)})
    with pytest.raises(ValueError, match="not a Hugging Face BERT state dict"):
        BERT.from_hf_state_dict({"weight": torch.zeros(2)}, num_heads=2)

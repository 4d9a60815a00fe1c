"""BERT weight interop: a randomly initialised small transformers BertForMaskedLM and our BERT on the
same weights give the same logits (fp32, eval mode, padded batches), and the state dicts round-trip."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from genkernels.models.bert import BERT  # noqa: E402

HF = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
          max_position_embeddings=64, type_vocab_size=2)


def _hf(cls=None, **overrides):
    torch.manual_seed(0)
    config = transformers.BertConfig(**{**HF, **overrides})
    model = (cls or transformers.BertForMaskedLM)(config).eval()
    with torch.no_grad():  # larger than the 0.02 init, so the comparison is not of near-constant logits
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.normal_(0.0, 0.2)
    return model, config


def _inputs():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (3, 20), generator=generator)
    attention_mask = torch.ones(3, 20, dtype=torch.long)
    attention_mask[1, 13:] = 0  # right padding
    attention_mask[2, :4] = 0  # left padding
    types = torch.randint(0, 2, (3, 20), generator=generator)
    return ids, attention_mask, types


def _assert_relative(ours, theirs, tol=1e-5):
    error = float((ours - theirs).abs().max() / theirs.abs().max())
    assert error <= tol, error


@pytest.mark.parametrize("padding", ["varlen", "mask"])
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_logits_equal_transformers(padding, hidden_act):
    hf, config = _hf(hidden_act=hidden_act)
    model = BERT.from_hf_state_dict(hf.state_dict(), hf_config=config.to_dict(), padding=padding).eval()
    assert (model.config.vocab_size, model.config.dim, model.config.depth, model.config.num_heads,
            model.config.intermediate_size, model.config.context) == (99, 32, 2, 4, 37, 64)
    ids, attention_mask, types = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=attention_mask, token_type_ids=types).logits
        ours = model(ids, attention_mask, types)
        real = attention_mask.bool()
        _assert_relative(ours[real], theirs[real])
        if padding == "mask":  # padded rows too, as Hugging Face computes them
            _assert_relative(ours, theirs)
        unpadded = hf(input_ids=ids).logits
        _assert_relative(model(ids), unpadded)


def test_state_dict_round_trip():
    hf, config = _hf()
    model = BERT.from_hf_state_dict(hf.state_dict(), num_heads=4).eval()
    exported = model.to_hf_state_dict()
    fresh = transformers.BertForMaskedLM(config).eval()
    fresh.load_state_dict(exported, strict=True)
    for name, tensor in hf.state_dict().items():
        torch.testing.assert_close(exported[name], tensor, rtol=0, atol=0, msg=name)
    again = BERT.from_hf_state_dict(exported, num_heads=4).eval()
    ids, attention_mask, types = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask, types), model(ids, attention_mask, types),
                                   rtol=0, atol=0)
        _assert_relative(model(ids, attention_mask, types)[attention_mask.bool()],
                         fresh(input_ids=ids, attention_mask=attention_mask,
                               token_type_ids=types).logits[attention_mask.bool()])


def test_bert_model_without_head_loads_the_encoder():
    hf, config = _hf(cls=transformers.BertModel)
    with pytest.warns(UserWarning, match="no MLM head"):
        model = BERT.from_hf_state_dict(hf.state_dict(), hf_config=config).eval()  # pooler ignored
    ids, attention_mask, types = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=attention_mask, token_type_ids=types).last_hidden_state
        ours = model.hidden(ids, attention_mask, types)
    real = attention_mask.bool()
    _assert_relative(ours[real], theirs[real])


def test_import_errors():
    hf, _ = _hf()
    state = hf.state_dict()
    with pytest.raises(ValueError, match="contradicts the state dict"):
        BERT.from_hf_state_dict(state, num_heads=4, dim=64)
    with pytest.raises(ValueError, match="divisible"):
        BERT.from_hf_state_dict(state, num_heads=5)
    untied = dict(state)
    untied["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match="untied decoders are not supported"):
        BERT.from_hf_state_dict(untied, num_heads=4)
    extra = {**state, "bert.encoder.layer.0.attention.self.rotary.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="does not know"):
        BERT.from_hf_state_dict(extra, num_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'relu' is not supported"):
        BERT.from_hf_state_dict(state, hf_config={"num_attention_heads": 4, "hidden_act": "relu"})

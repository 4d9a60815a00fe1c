"""GPT <-> Hugging Face GPT-2 weights: logits and greedy generation equal transformers' on a randomly
initialised small GPT2LMHeadModel (fp32, CPU, eval), and the state dict round-trips."""
import pytest
import torch

from genkernels.models.gpt import GPT
from genkernels.models.gpt import GPTConfig

transformers = pytest.importorskip("transformers")

HF_ARGS = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=101, n_positions=64, bos_token_id=None,
               eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(**HF_ARGS)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases (HF initialises them to 1 / 0)
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ours(hf_model, **overrides):
    return GPT.from_hf_state_dict(hf_model.state_dict(), hf_model.config, **overrides)


def test_logits_equal_transformers(hf_model):
    ours = _ours(hf_model)
    c = ours.config
    assert (c.vocab_size, c.context, c.dim, c.depth, c.num_heads) == (101, 64, 32, 2, 4)
    assert (c.norm, c.mlp, c.positions, c.bias, c.tie_embeddings) == ("layer", "gelu", "learned", True, True)
    tokens = torch.randint(0, 101, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf_model(tokens).logits
        mine = ours(tokens)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_prefix_keys_and_num_heads_override(hf_model):
    """A GPT2Model state dict (no "transformer.", no lm_head) with num_heads given loads the same."""
    body = {k[len("transformer."):]: v for k, v in hf_model.state_dict().items() if k.startswith("transformer.")}
    ours = GPT.from_hf_state_dict(body, num_heads=4)
    reference = _ours(hf_model)
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_greedy_generate_equals_transformers(hf_model):
    ours = _ours(hf_model)
    prompt = torch.tensor([[5, 17, 3, 99, 42, 8]])
    new = 20
    with torch.no_grad():
        theirs = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                   min_new_tokens=new, do_sample=False, pad_token_id=0)
    assert ours.generate(prompt, new, temperature=0) == [theirs[0, prompt.shape[1]:].tolist()]


def test_round_trip(hf_model):
    ours = _ours(hf_model)
    back = ours.to_hf_state_dict()
    theirs = {k: v for k, v in hf_model.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert set(back) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(back[key], value), key
    # a GPT trained here exports to transformers with equal logits
    torch.manual_seed(3)
    mine = GPT(GPTConfig(vocab_size=77, context=16, dim=24, depth=2, num_heads=3, mlp="gelu", norm="layer",
                         positions="learned", bias=True)).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**mine.hf_config())).eval()
    missing, unexpected = hf.load_state_dict(mine.to_hf_state_dict(), strict=False)
    assert not unexpected and all(k.endswith((".attn.bias", ".attn.masked_bias")) for k in missing)
    tokens = torch.randint(0, 77, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(mine(tokens), hf(tokens).logits, atol=1e-5, rtol=1e-5)
    again = GPT.from_hf_state_dict(mine.to_hf_state_dict(), mine.hf_config())
    for (name, a), (_, b) in zip(again.state_dict().items(), mine.state_dict().items()):
        assert torch.equal(a, b), name


def test_untied_head(hf_model):
    sd = dict(hf_model.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    ours = GPT.from_hf_state_dict(sd, hf_model.config)
    assert not ours.config.tie_embeddings
    assert torch.equal(ours.head.weight, sd["lm_head.weight"])
    assert torch.equal(ours.to_hf_state_dict()["lm_head.weight"], sd["lm_head.weight"])


def test_errors(hf_model):
    sd = hf_model.state_dict()
    with pytest.raises(ValueError, match="num_heads"):
        GPT.from_hf_state_dict(sd)
    with pytest.raises(TypeError, match="state_dict"):
        GPT.from_hf_state_dict([1, 2])
    with pytest.raises(TypeError, match="hf_config"):
        GPT.from_hf_state_dict(sd, 4)
    with pytest.raises(ValueError, match="wte"):
        GPT.from_hf_state_dict({"foo": torch.zeros(1)}, num_heads=4)
    with pytest.raises(ValueError, match="dim=64 contradicts"):
        GPT.from_hf_state_dict(sd, hf_model.config, dim=64)
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf_state_dict(sd, {**hf_model.config.to_dict(), "activation_function": "relu"})
    with pytest.raises(ValueError, match="keys a GPT-2 does not"):
        GPT.from_hf_state_dict({**sd, "transformer.extra.weight": torch.zeros(1)}, hf_model.config)
    with pytest.raises(ValueError, match="GPT-2 architecture"):
        GPT(GPTConfig(vocab_size=10, context=8, dim=8, depth=1, num_heads=2)).to_hf_state_dict()

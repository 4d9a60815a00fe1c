"""swap_layers: torch models keep their outputs and gradients (2x rule against float64 copies), their
state-dict keys and parameters, and the report says what was replaced and skipped."""
import copy

import pytest
import torch
from torch import nn

import genkernels.nn.attention as gk_attention
from genkernels.nn import LayerNorm, MultiheadAttention, RMSNorm, SwapReport, swap_layers
from genkernels.testing import assert_close_2x

D, HEADS = 32, 4


def _three(model):
    """(torch float32 copy, torch float64 copy, swapped float32 copy, report) of one model."""
    ref = copy.deepcopy(model)
    truth = copy.deepcopy(model).double()
    report = swap_layers(copy.deepcopy(model))
    return ref, truth, report.model, report


def _check_outputs_and_grads(ref, truth, fast, run, name):
    """run(model, dtype) -> output (batch first); the output per sample and every parameter gradient
    under the 2x rule. A gradient is judged as one vector (1, numel), not row by row: its rows are not
    samples, and each carries the rounding of the whole network above it, in which torch's own fp32
    error on one row of 32 elements is sometimes a lucky fraction of the usual (the same convention as
    tests/nn/test_flow_sequential.py)."""
    outs = {}
    for key, model, dtype in (("ref", ref, torch.float32), ("truth", truth, torch.float64),
                              ("fast", fast, torch.float32)):
        model.zero_grad(set_to_none=True)
        out = run(model, dtype)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
        (out * g).sum().backward()
        outs[key] = out.detach()
    assert_close_2x(outs["fast"], outs["truth"], outs["ref"], name=f"{name} output")
    grads = [dict((n, p.grad) for n, p in m.named_parameters()) for m in (ref, truth, fast)]
    assert grads[0].keys() == grads[1].keys() == grads[2].keys()
    for n in grads[0]:
        assert grads[2][n] is not None, n
        fast_g, truth_g, ref_g = (g[n].flatten().unsqueeze(0) for g in grads[::-1])
        assert_close_2x(fast_g, truth_g, ref_g, name=f"{name} grad {n}")


def _transformer(batch_first):
    torch.manual_seed(0)
    return nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64,
                          dropout=0.0, batch_first=batch_first)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_transformer_outputs_and_gradients_match(batch_first, train):
    model = _transformer(batch_first)
    model.train(train)
    ref, truth, fast, report = _three(model)
    assert report.counts == {"MultiheadAttention": 6, "LayerNorm": 12} and not report.skipped
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randn(3, 9, D, generator=g), torch.randn(3, 6, D, generator=g)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[0, 6:] = pad[2, 8:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(6)

    def run(m, dtype):
        s, t = src.to(dtype), tgt.to(dtype)
        if not batch_first:
            s, t = s.transpose(0, 1), t.transpose(0, 1)
        out = m(s, t, tgt_mask=causal.to(dtype), src_key_padding_mask=pad, memory_key_padding_mask=pad,
                tgt_is_causal=True)
        return out if batch_first else out.transpose(0, 1)

    _check_outputs_and_grads(ref, truth, fast, run, f"Transformer batch_first={batch_first} train={train}")
    with torch.no_grad():  # eval + no grad: torch's encoder fast path would have run; it is off, same result
        fast.eval(), ref.eval(), truth.eval()
        assert_close_2x(run(fast, torch.float32), run(truth, torch.float64), run(ref, torch.float32),
                        name="no-grad eval output")


def test_encoder_with_norm_and_nested_tensor_fast_path():
    """nn.TransformerEncoder (enable_nested_tensor) in eval under no_grad: torch would turn the padded
    batch into a nested tensor and run its fused layer; after the swap the swapped layers run."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(D), enable_nested_tensor=True).eval()
    assert model.use_nested_tensor
    ref, truth, fast, report = _three(model)
    assert report.counts == {"MultiheadAttention": 2, "LayerNorm": 5}
    assert set(report.fastpath_disabled) == {"", "layers.0", "layers.1"} and not fast.use_nested_tensor
    x = torch.randn(4, 10, D, generator=torch.Generator().manual_seed(2))
    pad = torch.zeros(4, 10, dtype=torch.bool)
    pad[1, 7:] = pad[3, 4:] = True
    calls = []
    original = MultiheadAttention.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    with torch.no_grad():
        expected = {name: m(x.to(dtype), src_key_padding_mask=pad)[~pad]
                    for name, m, dtype in (("ref", ref, torch.float32), ("truth", truth, torch.float64))}
        MultiheadAttention.forward = counting
        try:
            out = fast(x, src_key_padding_mask=pad)
        finally:
            MultiheadAttention.forward = original
    assert len(calls) == 2  # the swapped attention ran in both layers (no fused torch bypass)
    assert_close_2x(out[~pad], expected["truth"], expected["ref"], name="encoder eval output (real positions)")
    for m in (ref, truth, fast):
        m.train()

    def run(m, dtype):
        return m(x.to(dtype), src_key_padding_mask=pad)[~pad]

    _check_outputs_and_grads(ref, truth, fast, run, "TransformerEncoder train")


class Custom(nn.Module):
    """RMSNorm, a cross-attention MHA with kdim/vdim, and modules the fast layers leave alone."""

    class MyNorm(nn.LayerNorm):
        pass

    def __init__(self):
        super().__init__()
        self.norm = nn.RMSNorm(D, eps=1e-6)
        self.norm_plain = nn.RMSNorm(D, elementwise_affine=False)
        self.ln_nobias = nn.LayerNorm(D, bias=False, eps=1e-4)
        self.attn = nn.MultiheadAttention(D, HEADS, kdim=12, vdim=20, batch_first=True)
        self.ln2d = nn.LayerNorm((5, D))  # two trailing dims: not expressible, skipped
        self.mine = self.MyNorm(D)  # a subclass: skipped
        self.proj = nn.Linear(D, D)

    def forward(self, x, context):  # x (B, 5, D), context (B, S, 12) and (B, S, 20)
        h = self.ln_nobias(self.norm(x))
        h = h + self.attn(h, context[0], context[1], need_weights=False)[0]
        return self.proj(self.mine(self.ln2d(self.norm_plain(h))))


def test_custom_module_with_rmsnorm_and_unsupported_layers():
    torch.manual_seed(0)
    model = Custom()
    ref, truth, fast, report = _three(model)
    assert report.counts == {"RMSNorm": 2, "LayerNorm": 1, "MultiheadAttention": 1}
    assert set(report.skipped) == {"ln2d", "mine"}
    assert "trailing dims" in report.skipped["ln2d"] and "subclass" in report.skipped["mine"]
    assert type(fast.ln2d) is nn.LayerNorm and type(fast.mine) is Custom.MyNorm
    assert isinstance(fast.norm, RMSNorm) and fast.norm.eps == 1e-6 and fast.norm_plain.weight is None
    assert isinstance(fast.ln_nobias, LayerNorm) and fast.ln_nobias.bias is None and fast.ln_nobias.eps == 1e-4
    assert isinstance(fast.attn, MultiheadAttention) and (fast.attn.kdim, fast.attn.vdim) == (12, 20)
    g = torch.Generator().manual_seed(3)
    x, ck, cv = torch.randn(2, 5, D, generator=g), torch.randn(2, 7, 12, generator=g), torch.randn(2, 7, 20, generator=g)
    _check_outputs_and_grads(ref, truth, fast, lambda m, dt: m(x.to(dt), (ck.to(dt), cv.to(dt))), "custom")
    text = repr(report)
    assert "replaced 4 module(s)" in text and "ln2d" in text and "attn: torch.nn.MultiheadAttention" in text


def test_state_dict_parameters_mode_and_idempotence():
    model = _transformer(True)
    model.decoder.eval()  # mixed modes survive
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    report = swap_layers(model)
    assert report.model is model and isinstance(report, SwapReport)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p is params[n] for n, p in model.named_parameters())  # the optimizer's parameters still
    assert len(optimizer.param_groups[0]["params"]) == len(params)
    assert model.encoder.layers[0].self_attn.training and not model.decoder.layers[1].multihead_attn.training
    assert model.encoder.layers[0].self_attn.batch_first and model.encoder.layers[0].norm1.eps == 1e-5
    again = swap_layers(model)
    assert again.num_replaced == 0 and not again.skipped and not again.fastpath_disabled
    assert "replaced 0 module(s) (nothing)" in repr(again)


def test_options_sharing_and_root():
    model = _transformer(True)
    only_norms = swap_layers(model, attention=False, inplace=False)
    assert only_norms.model is not model and type(model.encoder.norm) is nn.LayerNorm  # original untouched
    assert only_norms.counts == {"LayerNorm": 12}
    assert type(only_norms.model.encoder.layers[0].self_attn) is nn.MultiheadAttention
    only_attn = swap_layers(copy.deepcopy(model), norms=False)
    assert only_attn.counts == {"MultiheadAttention": 6}
    shared = nn.LayerNorm(D)
    seq = nn.Sequential(shared, nn.Linear(D, D), shared)
    report = swap_layers(seq)
    assert seq[0] is seq[2] and isinstance(seq[0], LayerNorm) and report.num_replaced == 1
    root = swap_layers(nn.RMSNorm(D))
    assert isinstance(root.model, RMSNorm) and "" in root.replaced and "(model)" in repr(root)
    hooked = nn.LayerNorm(D)
    hooked.register_forward_hook(lambda *a: None)
    assert "hooks" in swap_layers(nn.Sequential(hooked)).skipped["0"]


def test_fused_attention_runs_for_the_causal_decoder(monkeypatch):
    """The decoder's causal self-attention reaches genkernels.ops.attention (not torch's fallback)."""
    model = swap_layers(_transformer(True)).model
    calls = []
    real = gk_attention.attention
    monkeypatch.setattr(gk_attention, "attention", lambda *a, **k: calls.append(k.get("causal")) or real(*a, **k))
    src, tgt = torch.randn(2, 5, D), torch.randn(2, 4, D)
    model(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(4), tgt_is_causal=True)
    assert True in calls


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        swap_layers([nn.LayerNorm(4)])
    with pytest.raises(TypeError, match="attention must be a bool"):
        swap_layers(nn.LayerNorm(4), attention="yes")
    with pytest.raises(TypeError, match="inplace must be a bool"):
        swap_layers(nn.LayerNorm(4), inplace=None)

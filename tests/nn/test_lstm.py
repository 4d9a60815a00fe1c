"""genkernels.nn.LSTM / LSTMCell: equal torch.nn.LSTM / LSTMCell after load_state_dict (outputs and
every gradient, batch_first both ways, 2 layers, bidirectional) under the 2x rule; fp16/bf16 and
LayerNorm sequences against float64; recurrent dropout applies one mask at every step (the
reference recurrence with an explicit mask) and none in eval; errors."""
import copy

import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.nn import LSTM, LSTMCell
from genkernels.nn import lstm as lstm_module
from genkernels.ops.lstm_cell import lstm_dropout_mask_ref
from genkernels.testing import assert_close_2x


def _sum_scale(name, truth):
    """Parameter gradients are sums over T * B products: where they cancel, a correct implementation
    is off by ulps of the terms (summed in another order than torch's), whose scale the tensor's
    largest entry bounds from below."""
    return truth.abs().max() if name.startswith(("grad_weight", "grad_bias", "grad_ln")) else None

pytestmark = pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built")


def _run(model, x, hx, gy, gh, gc):
    """(output, h_n, c_n, grad input, grad h0, grad c0, grad of every parameter)."""
    x = x.detach().requires_grad_(True)
    h0, c0 = (t.detach().requires_grad_(True) for t in hx)
    y, (hn, cn) = model(x, (h0, c0))
    params = list(model.parameters())
    grads = torch.autograd.grad([y, hn, cn], [x, h0, c0, *params], [gy.to(y.dtype), gh.to(y.dtype), gc.to(y.dtype)])
    return (y, hn, cn, *grads), ["output", "h_n", "c_n", "grad_input", "grad_h0", "grad_c0",
                                 *(f"grad_{n}" for n, _ in model.named_parameters())]


def _data(T, B, I, H, L, D, batch_first, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*((B, T) if batch_first else (T, B)), I, generator=g)
    hx = (torch.randn(L * D, B, H, generator=g), torch.randn(L * D, B, H, generator=g))
    gy = torch.randn(*((B, T) if batch_first else (T, B)), D * H, generator=g)
    return x, hx, gy, torch.randn(L * D, B, H, generator=g), torch.randn(L * D, B, H, generator=g)


def _batch_major(t, batch_first):
    """assert_close_2x checks per leading index: put the batch first; a parameter vector's gradient
    is one sample (not one sample per element)."""
    if t.dim() == 1:
        return t.reshape(1, -1)
    return t if batch_first or t.dim() < 3 else t.transpose(0, 1)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_equals_torch_lstm_after_load_state_dict(batch_first, bidirectional):
    torch.manual_seed(0)
    T, B, I, H, L = 7, 3, 5, 12, 2
    D = 2 if bidirectional else 1
    ref = torch.nn.LSTM(I, H, num_layers=L, batch_first=batch_first, bidirectional=bidirectional)
    ours = LSTM(I, H, num_layers=L, batch_first=batch_first, bidirectional=bidirectional)
    ours.load_state_dict(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x, hx, gy, gh, gc = _data(T, B, I, H, L, D, batch_first)
    fast, names = _run(ours, x, hx, gy, gh, gc)
    truth, _ = _run(copy.deepcopy(ref).double(), x.double(), [t.double() for t in hx], gy, gh, gc)
    lowp, _ = _run(ref, x, hx, gy, gh, gc)
    for name, a, t, r in zip(names, fast, truth, lowp):
        assert a.shape == t.shape, name
        bf = batch_first or name not in ("output", "grad_input")
        assert_close_2x(_batch_major(a, bf), _batch_major(t, bf), _batch_major(r, bf),
                        name=f"{name} [bf={batch_first}, bi={bidirectional}]",
                        term_scale=_sum_scale(name, t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_low_precision_and_layernorm_sequences(dtype, layer_norm):
    """The kernel path vs the float64 reference recurrence, torch's own error measured by the
    reference recurrence in the same dtype (fp32 too for LayerNorm, which torch.nn.LSTM lacks)."""
    torch.manual_seed(1)
    # LayerNorm in 16 bits amplifies every rounding through the steps (both torch's and ours): a
    # shorter, wider single layer keeps the comparison about the kernels rather than the chaos
    T, B, I, H, L = (4, 3, 4, 32, 1) if layer_norm else (6, 3, 4, 16, 2)
    model = LSTM(I, H, num_layers=L, layer_norm=layer_norm)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("ln_"):
                p.add_(0.2 * torch.randn_like(p))
    x, hx, gy, gh, gc = _data(T, B, I, H, L, 1, False, seed=2)
    dtypes = [dtype] + ([torch.float32] if layer_norm and dtype == torch.float16 else [])
    truth, names = _run(copy.deepcopy(model).double(), x.double(), [t.double() for t in hx], gy, gh, gc)
    for dt in dtypes:
        m = copy.deepcopy(model).to(dt)
        fast, _ = _run(m, x.to(dt), [t.to(dt) for t in hx], gy, gh, gc)
        with use_backend("torch"):
            lowp, _ = _run(m, x.to(dt), [t.to(dt) for t in hx], gy, gh, gc)
        for name, a, t, r in zip(names, fast, truth, lowp):
            assert a.dtype == dt
            bf = name not in ("output", "grad_input")
            assert_close_2x(_batch_major(a, bf), _batch_major(t, bf), _batch_major(r, bf),
                            name=f"{name} [{dt}, ln={layer_norm}]",
                            term_scale=_sum_scale(name, t))


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_recurrent_dropout_same_mask_every_step(layer_norm):
    torch.manual_seed(3)
    T, B, I, H, p = 5, 4, 3, 16, 0.5
    model = LSTM(I, H, layer_norm=layer_norm, recurrent_dropout=p)
    x = torch.randn(T, B, I)
    torch.manual_seed(7)
    y, (hn, cn) = model(x)
    torch.manual_seed(7)
    seed = int(torch.randint(0, 2**62, (1,)).item())  # what the forward draws
    mask = lstm_dropout_mask_ref(B, H, p, seed, 0)
    assert (mask == 0).any() and (mask != 0).any()
    # the recurrence by hand: the same mask on h_{t-1} at every step
    sd = model.state_dict()
    xg = x @ sd["weight_ih_l0"].t()
    b = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    if layer_norm:
        xg = torch.nn.functional.layer_norm(xg, (4 * H,), sd["ln_weight_ih_l0"], b)
    else:
        xg = xg + b
    h, c, outs = torch.zeros(B, H), torch.zeros(B, H), []
    for t in range(T):
        a = (h * mask) @ sd["weight_hh_l0"].t()
        if layer_norm:
            a = torch.nn.functional.layer_norm(a, (4 * H,), sd["ln_weight_hh_l0"])
        i, f, g, o = (xg[t] + a).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cn_ = torch.nn.functional.layer_norm(c, (H,), sd["ln_weight_c_l0"], sd["ln_bias_c_l0"]) if layer_norm else c
        h = torch.sigmoid(o) * torch.tanh(cn_)
        outs.append(h)
    torch.testing.assert_close(y, torch.stack(outs), rtol=1e-5, atol=1e-5)
    # the reference route (torch backend) draws the same mask and gives the same gradients
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    yk = model(xr)[0]
    gk_ = torch.autograd.grad(yk.sum(), [xr, *model.parameters()])
    torch.manual_seed(7)
    with use_backend("torch"):
        yr = model(xr)[0]
        gr = torch.autograd.grad(yr.sum(), [xr, *model.parameters()])
    torch.testing.assert_close(yk, yr, rtol=1e-5, atol=1e-5)
    for a, r in zip(gk_, gr):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
    # eval: no dropout
    model.eval()
    plain = LSTM(I, H, layer_norm=layer_norm)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x)[0], plain(x)[0])


def test_lstm_cell_equals_torch_and_layernorm_cell_runs():
    torch.manual_seed(4)
    ref = torch.nn.LSTMCell(5, 8)
    ours = LSTMCell(5, 8)
    ours.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(3, 5), torch.randn(3, 8), torch.randn(3, 8)
    torch.testing.assert_close(ours(x, (h, c)), ref(x, (h, c)))
    torch.testing.assert_close(ours(x[0], (h[0], c[0])), ref(x[0], (h[0], c[0])))
    # stepping the cell equals the sequence layer
    seq = LSTM(5, 8, layer_norm=True)
    cell = LSTMCell(5, 8, layer_norm=True)
    cell.load_state_dict({k[:-3]: v for k, v in seq.state_dict().items()})
    xs = torch.randn(4, 3, 5)
    y, _ = seq(xs)
    state, outs = None, []
    for t in range(4):
        state = cell(xs[t], state)
        outs.append(state[0])
    torch.testing.assert_close(y, torch.stack(outs), rtol=1e-5, atol=1e-6)


def test_no_grad_path_matches_and_float64_uses_reference():
    torch.manual_seed(5)
    model = LSTM(3, 6, num_layers=2)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        a = model(x)
    b = model(x)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    m64 = copy.deepcopy(model).double()
    ref = torch.nn.LSTM(3, 6, num_layers=2).double()
    ref.load_state_dict(m64.state_dict())
    torch.testing.assert_close(m64(x.double())[0], ref(x.double())[0])


def test_errors():
    model = LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size=3 features"):
        model(torch.zeros(5, 2, 4))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\)"):
        model(torch.zeros(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"c_0 must have shape"):
        model(torch.zeros(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match="packed sequences"):
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.zeros(5, 2, 3), [5, 3])
        model(packed)
    with pytest.raises(ValueError, match="proj_size is not supported"):
        LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"recurrent_dropout must be a number in \[0, 1\)"):
        LSTM(3, 4, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        LSTM(3, 0)
    with pytest.raises(ValueError, match="at least one time step"):
        model(torch.zeros(0, 2, 3))
    with pytest.raises(ValueError, match=r"input must be \(B, 3\)"):
        LSTMCell(3, 4)(torch.zeros(2, 5))


_PACKS = lstm_module._MKLDNN_LINEAR


@pytest.mark.skipif(not _PACKS, reason="torch built without oneDNN")
def test_prepacked_recurrent_matmul_matches_torch():
    """Sequences of >= 8 steps at batch >= 16 run the recurrent matmul through a prepacked oneDNN
    weight (forward: W_hh, backward: W_hh^T): outputs and every gradient meet the 2x rule against
    float64, as the addmm route does."""
    torch.manual_seed(0)
    T, B, I, H, L = 9, 4, 24, lstm_module._PACK_MIN_HIDDEN, 1
    assert lstm_module._RecurrentMatmul(torch.zeros(4 * H, H), B, T).packed is not None  # the route under test
    ref = torch.nn.LSTM(I, H, num_layers=L)
    ours = LSTM(I, H, num_layers=L)
    ours.load_state_dict(ref.state_dict())
    x, hx, gy, gh, gc = _data(T, B, I, H, L, 1, False)
    fast, names = _run(ours, x, hx, gy, gh, gc)
    truth, _ = _run(copy.deepcopy(ref).double(), x.double(), [t.double() for t in hx], gy, gh, gc)
    lowp, _ = _run(ref, x, hx, gy, gh, gc)
    for name, a, t, r in zip(names, fast, truth, lowp):
        assert_close_2x(_batch_major(a, False), _batch_major(t, False), _batch_major(r, False), name=name,
                        term_scale=_sum_scale(name, t))


@pytest.mark.skipif(not _PACKS, reason="torch built without oneDNN")
def test_prepacked_layernorm_sequence_equals_addmm_route(monkeypatch):
    """The LayerNorm-LSTM's recurrent matmul (gates_h = h W_hh^T, no bias) through the packed weight
    gives what the addmm route gives, forward and backward, up to fp32 summation order."""
    torch.manual_seed(0)
    T, B, H = 9, 4, lstm_module._PACK_MIN_HIDDEN
    model = LSTM(H, H, layer_norm=True)
    x, hx, gy, gh, gc = _data(T, B, H, H, 1, 1, False)
    packed, names = _run(model, x, hx, gy, gh, gc)
    monkeypatch.setattr(lstm_module, "_packable", lambda w, B: False)
    plain, _ = _run(model, x, hx, gy, gh, gc)
    for name, a, b in zip(names, packed, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()), msg=name)


@pytest.mark.skipif(not _PACKS, reason="torch built without oneDNN")
def test_packed_weight_cache_follows_parameter_updates():
    """Step-by-step calls reuse the weight a long sequence packed while the parameter is unchanged; an
    in-place update (an optimizer step, load_state_dict) must repack, never reuse a stale copy."""
    torch.manual_seed(0)
    B, H = 4, lstm_module._PACK_MIN_HIDDEN
    ours, ref = LSTM(H, H).eval(), torch.nn.LSTM(H, H).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(12, B, H)
    with torch.no_grad():
        y, state = ours(x[:8])  # packs (8 steps)
        key = (id(ours.weight_hh_l0), False)
        assert key in lstm_module._pack_cache
        step, _ = ours(x[8:9], state)  # one step: the cached packed weight
        torch.testing.assert_close(step, ref(x[:9])[0][8:], rtol=1e-5, atol=1e-6)
        ours.weight_hh_l0.mul_(0.5)  # the version counter moves: the cache entry is stale
        ref.weight_hh_l0.mul_(0.5)
        again, _ = ours(x[8:9], state)
        expected, _ = ref(x[8:9], tuple(t for t in state))
        torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-6)
        ours.load_state_dict(torch.nn.LSTM(H, H).state_dict())
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)

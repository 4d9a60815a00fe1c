"""reparam_kl: every compiled backend against the float64 reference under the 2x rule, forward
and both gradients, plus seeds, odd/zero/non-contiguous shapes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops.philox import philox_normal, philox_normal_ref
from genkernels.ops.reparam_kl import reparam_kl, reparam_kl_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))
SEED, OFFSET = 1234, 5


def _inputs(shape, dtype, device, requires_grad=True):
    mu = torch.randn(shape, dtype=torch.float32).to(device, dtype)
    logvar = (2 * torch.rand(shape, dtype=torch.float32) - 1.5).to(device, dtype)  # in [-1.5, 0.5]
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad)


def _forward_backward(fn, mu, logvar, grad_z, grad_kl):
    z, kl = fn(mu, logvar)
    grad_mu, grad_logvar = torch.autograd.grad([z, kl], [mu, logvar], [grad_z.to(z.dtype), grad_kl.to(kl.dtype)])
    return z, kl, grad_mu, grad_logvar


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("numel", [1, 7, 1023, 4097])
def test_matches_reference(backend, device, dtype, numel):
    shape = (3, numel)
    mu, logvar = _inputs(shape, dtype, device)
    grad_z = torch.randn(shape, device=device)
    grad_kl = torch.randn(3, device=device)
    with use_backend(backend):
        fast = _forward_backward(lambda m, lv: reparam_kl(m, lv, SEED, OFFSET), mu, logvar, grad_z, grad_kl)
    noise = philox_normal(shape, SEED, OFFSET, device=device)
    mu64, logvar64 = (t.detach().double().requires_grad_(True) for t in (mu, logvar))
    truth = _forward_backward(lambda m, lv: reparam_kl_ref(m, lv, noise.double()), mu64, logvar64, grad_z, grad_kl)
    lowp = _forward_backward(lambda m, lv: reparam_kl_ref(m, lv, noise), mu, logvar, grad_z, grad_kl)
    assert fast[0].dtype == dtype and fast[1].dtype == torch.float32 and fast[1].shape == (3,)
    # z and both gradients are sums of two terms that can cancel: their rounding floor is ulps of
    # the terms (a float32 kernel and torch each round those). The per-sample KL (a float32 sum
    # of up to 4097 non-negative terms) is held to the default rule: its chunked sum is within a
    # few ulps of the float64 one, as torch's pairwise sum is.
    m, lv, e = mu64.detach(), logvar64.detach(), noise.double()
    gz, gkl = grad_z.double(), grad_kl.double().view(-1, 1)
    terms = {"z": m.abs() + (0.5 * lv).exp() * e.abs(), "kl": None, "grad_mu": gz.abs() + (gkl * m).abs(),
             "grad_logvar": 0.5 * ((gz * e).abs() * (0.5 * lv).exp() + (gkl * lv.expm1()).abs())}
    for name, a, t, r in zip(("z", "kl", "grad_mu", "grad_logvar"), fast, truth, lowp):
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, D={numel}]", term_scale=terms[name])


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_noise_is_the_philox_stream(backend, device):
    """mu = 0, logvar = 0 gives z = eps: the same Philox normals as the pure-torch generator."""
    zeros = torch.zeros(4, 2, 33, device=device)
    with use_backend(backend):
        z, kl = reparam_kl(zeros, zeros, seed=SEED, offset=OFFSET)
    expected = philox_normal_ref(4, 66, SEED, OFFSET, device).view(4, 2, 33)
    # same bits; sin/cos/log of libm and torch may differ in the last place
    torch.testing.assert_close(z, expected, rtol=4e-7, atol=4e-7)
    assert torch.equal(kl, torch.zeros(4, device=device))
    with use_backend("torch"):
        z_torch, _ = reparam_kl(zeros, zeros, seed=SEED, offset=OFFSET)
    torch.testing.assert_close(z, z_torch, rtol=4e-7, atol=4e-7)


def test_seed_offset_and_sample_streams():
    mu, logvar = torch.zeros(3, 64), torch.zeros(3, 64)
    z1, _ = reparam_kl(mu, logvar, seed=7)
    z2, _ = reparam_kl(mu, logvar, seed=7)
    z3, _ = reparam_kl(mu, logvar, seed=7, offset=1)
    z4, _ = reparam_kl(mu, logvar, seed=8)
    assert torch.equal(z1, z2)
    assert not torch.equal(z1, z3) and not torch.equal(z1, z4)
    assert not torch.equal(z1[0], z1[1])  # each sample has its own stream
    torch.manual_seed(3)
    z5, _ = reparam_kl(mu, logvar)  # seed drawn from torch's generator: repeatable
    torch.manual_seed(3)
    z6, _ = reparam_kl(mu, logvar)
    assert torch.equal(z5, z6)


def test_distribution_and_kl_formula():
    mu = torch.full((2, 50_000), 1.0)
    logvar = torch.full((2, 50_000), float(torch.log(torch.tensor(4.0))))
    z, kl = reparam_kl(mu, logvar, seed=11)
    assert abs(z.mean().item() - 1.0) < 0.03 and abs(z.std().item() - 2.0) < 0.03
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_single_output_gradients(backend, device):
    """Gradient through kl only, and through z only (the other output unused)."""
    mu, logvar = _inputs((5, 9), torch.float32, device)
    with use_backend(backend):
        _, kl = reparam_kl(mu, logvar, seed=SEED)
        grad_mu, grad_logvar = torch.autograd.grad(kl.sum(), [mu, logvar])
        torch.testing.assert_close(grad_mu, mu.detach())
        torch.testing.assert_close(grad_logvar, 0.5 * (logvar.detach().exp() - 1))
        z, _ = reparam_kl(mu, logvar, seed=SEED)
        grad_mu, grad_logvar = torch.autograd.grad(z.sum(), [mu, logvar])
    eps = philox_normal((5, 9), SEED, device=device)
    torch.testing.assert_close(grad_mu, torch.ones_like(grad_mu))
    torch.testing.assert_close(grad_logvar, 0.5 * eps * torch.exp(0.5 * logvar.detach()))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,), (2, 0, 4)])
def test_zero_size(backend, device, shape):
    mu, logvar = _inputs(shape, torch.float32, device)
    with use_backend(backend):
        z, kl = reparam_kl(mu, logvar, seed=SEED)
        assert z.shape == shape and kl.shape == (shape[0],)
        assert torch.equal(kl, torch.zeros(shape[0], device=device))
        grad_mu, grad_logvar = torch.autograd.grad((z.sum() + kl.sum()), [mu, logvar], allow_unused=False)
    assert grad_mu.shape == shape and grad_logvar.shape == shape


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_non_contiguous_inputs(backend, device):
    base_mu, base_logvar = _inputs((6, 10, 3), torch.float32, device, requires_grad=False)
    mu, logvar = base_mu.transpose(1, 2)[::2], base_logvar.transpose(1, 2)[::2]  # (3, 3, 10) strided
    assert not mu.is_contiguous()
    with use_backend(backend):
        z, kl = reparam_kl(mu, logvar, seed=SEED)
        z_c, kl_c = reparam_kl(mu.contiguous(), logvar.contiguous(), seed=SEED)
    assert torch.equal(z, z_c) and torch.equal(kl, kl_c)


def test_explicit_noise_runs_the_reference():
    mu, logvar = _inputs((4, 6), torch.float32, "cpu")
    noise = torch.randn(4, 6)
    z, kl = reparam_kl(mu, logvar, noise=noise)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * noise)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))


def test_float64_uses_the_reference():
    mu, logvar = _inputs((2, 5), torch.float64, "cpu")
    z, kl = reparam_kl(mu, logvar, seed=SEED)
    assert z.dtype == torch.float64 and kl.dtype == torch.float64
    with use_backend("cpu"), pytest.raises(ValueError, match="float64"):
        reparam_kl(mu, logvar, seed=SEED)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_opcheck(backend, device):
    mu, logvar = _inputs((3, 17), torch.float32, device)
    with use_backend(backend):
        torch.library.opcheck(torch.ops.genkernels.reparam_kl.default, (mu, logvar, SEED, OFFSET))
        grad_z, grad_kl = torch.randn(3, 17, device=device), torch.randn(3, device=device)
        torch.library.opcheck(torch.ops.genkernels.reparam_kl_backward.default,
                              (grad_z, grad_kl, mu.detach(), logvar.detach(), SEED, OFFSET))


def test_torch_compile_fullgraph():
    mu, logvar = _inputs((4, 33), torch.float32, "cpu")

    def step(m, lv):
        z, kl = reparam_kl(m, lv, SEED, OFFSET)
        return (z * z).sum() + kl.sum()

    # aot_eager traces what matters for a custom op (dynamo, the fake kernel, AOT autograd through
    # the registered backward) without inductor's C++ code generation, which costs ~15 s on CPU
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(mu, logvar)
    eager_grads = torch.autograd.grad(eager_loss, [mu, logvar])
    loss = compiled(mu, logvar)
    grads = torch.autograd.grad(loss, [mu, logvar])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="logvar must have the shape of mu"):
        reparam_kl(mu, torch.zeros(2, 4), seed=0)
    with pytest.raises(TypeError, match="logvar must have the dtype of mu"):
        reparam_kl(mu, logvar.half(), seed=0)
    with pytest.raises(TypeError, match="mu must be a floating-point tensor"):
        reparam_kl(torch.zeros(2, 3, dtype=torch.int64), logvar, seed=0)
    with pytest.raises(TypeError, match="mu must be a torch.Tensor"):
        reparam_kl([0.0], logvar, seed=0)
    with pytest.raises(ValueError, match="mu must have a leading batch dimension"):
        reparam_kl(torch.tensor(0.0), torch.tensor(0.0), seed=0)
    with pytest.raises(ValueError, match="seed must be in"):
        reparam_kl(mu, logvar, seed=-1)
    with pytest.raises(TypeError, match="offset must be an int"):
        reparam_kl(mu, logvar, seed=0, offset=1.5)
    with pytest.raises(ValueError, match="either seed or noise"):
        reparam_kl(mu, logvar, seed=0, noise=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="noise must have mu's shape"):
        reparam_kl(mu, logvar, noise=torch.zeros(3, 2))

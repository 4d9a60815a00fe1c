"""Checks shared by the flow-layer tests: round trips, and log-determinants against the autograd
Jacobian."""
import torch

# inverse(forward(x)) tolerances, per dtype: a few layers of rounding on values of magnitude ~5
ROUNDTRIP_TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-11, rtol=1e-11)}
# |logdet - log|det J|| in float64 for Jacobians of up to 64 x 64
LOGDET_TOL = dict(atol=1e-8, rtol=1e-8)


@torch.no_grad()
def randomize(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter (the zero-initialised conditioner heads make layers the identity)."""
    for p in module.parameters():
        p.add_(std * torch.randn_like(p))
    return module


def jacobian_logdet(fn, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """log|det d fn(x_n) / d x_n| for each sample n, from the full autograd Jacobian (float64)."""
    out = []
    for n in range(x.shape[0]):
        ctx = None if context is None else context[n:n + 1]
        jac = torch.autograd.functional.jacobian(lambda v: fn(v, ctx)[0].reshape(-1), x[n:n + 1])
        jac = jac.reshape(jac.shape[0], -1)
        assert jac.shape[0] == jac.shape[1], jac.shape
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def check_roundtrip(layer, x, context=None):
    y, logdet = layer(x, context)
    x_back, inverse_logdet = layer.inverse(y, context)
    tol = ROUNDTRIP_TOL[x.dtype]
    torch.testing.assert_close(x_back, x, **tol)
    torch.testing.assert_close(inverse_logdet, -logdet, **tol)
    assert logdet.shape == (x.shape[0],)
    return y, logdet


def check_logdet(layer, x, context=None):
    """forward and inverse logdets against the autograd Jacobians, float64."""
    assert x.dtype == torch.float64
    y, logdet = layer(x, context)
    torch.testing.assert_close(logdet, jacobian_logdet(layer, x, context), **LOGDET_TOL)
    _, inverse_logdet = layer.inverse(y, context)
    torch.testing.assert_close(inverse_logdet, jacobian_logdet(layer.inverse, y.detach(), context), **LOGDET_TOL)

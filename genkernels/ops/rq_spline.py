"""Monotonic rational-quadratic spline with linear tails (Durkan et al. 2019, "Neural Spline Flows",
section 3.1 and appendix A; the `unconstrained_rational_quadratic_spline` of nflows):

    inside [-B, B] (B = tail_bound), bin k of K with knots (x_k, y_k), width w_k, height h_k,
    slope s_k = h_k / w_k, knot derivatives d_k, d_{k+1} and theta = (x - x_k) / w_k:

    y = y_k + h_k (s_k theta^2 + d_k theta (1 - theta)) / (s_k + (d_k + d_{k+1} - 2 s_k) theta (1 - theta))
    dy/dx = s_k^2 (d_{k+1} theta^2 + 2 s_k theta (1 - theta) + d_k (1 - theta)^2) / denominator^2

    outside [-B, B] the identity (log-derivative 0). The knots come from unnormalised parameters:
    w = min_bin_width + (1 - K min_bin_width) softmax(widths), x_k = -B + 2B cumsum(w) (x_0 = -B,
    x_K = B exactly), the same for the heights; d_k = min_derivative + softplus(derivatives) for the
    K - 1 interior knots and d_0 = d_K = 1 (the tails' slope, so the map is C^1).
    The inverse solves the quadratic a theta^2 + b theta + c = 0 of the bin containing y in the
    cancellation-free form theta = 2c / (-b - sqrt(b^2 - 4ac)) (appendix A).

Bin search (forward in x, inverse in y), as nflows' searchsorted: the bin is the number of interior
knots <= x, so an input exactly on knot k belongs to bin k (the bin to its right) and x = B to the
last bin (theta = 1). The bound itself is inside: x = +-B is evaluated by the spline (which gives +-B).

The math (and its backward, which recomputes the bin instead of storing it) is written once in
csrc/flow/rq_spline.h for the C++ CPU and CUDA kernels: fp32 arithmetic whatever the storage,
except the softmax, the knots and the inverse's quadratic, in double (a knot eps * B off is
multiplied by a steep bin's slope; so the kernels are several times more accurate than this
file's fp32 reference); per-sample log-determinant from per-(sample, chunk) partial sums added in
a fixed order (no atomics). The torch backend's backward (rq_spline_backward_ref) is the same
closed form, vectorised.

NaN: a NaN input takes the identity path (NaN y, NaN logdet for its sample, gradient grad_y to x,
none to the parameters); NaN parameters give NaN outputs for the elements inside the bound.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define


# ---- reference --------------------------------------------------------------------------------
def _knots(unnormalized: torch.Tensor, bound: float, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., K) unnormalised bin sizes -> knots (..., K + 1) from -bound to bound and sizes (..., K)."""
    k = unnormalized.shape[-1]
    sizes = min_size + (1.0 - min_size * k) * torch.softmax(unnormalized, dim=-1)
    inner = (2.0 * bound) * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    edge = inner.new_full(inner.shape[:-1] + (1,), bound)
    knots = torch.cat([-edge, inner, edge], dim=-1)  # the ends exactly +-bound, as nflows sets them
    return knots, knots[..., 1:] - knots[..., :-1]


def rq_spline_ref(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, *,
                  tail_bound: float = 3.0, inverse: bool = False, min_bin_width: float = 1e-3,
                  min_bin_height: float = 1e-3, min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch rq_spline in x's dtype (eager ops, differentiable by autograd); same arguments
    and returns as rq_spline. Elements outside the bound are replaced by 0 before the spline math,
    so their parameters get exact zero gradients (as with nflows' masking) without boolean
    indexing."""
    bound = float(tail_bound)
    inside = (x >= -bound) & (x <= bound)  # False for NaN: the identity branch carries it
    xs = torch.where(inside, x, torch.zeros_like(x))
    cw, w = _knots(widths, bound, min_bin_width)
    ch, h = _knots(heights, bound, min_bin_height)
    one = derivatives.new_ones(derivatives.shape[:-1] + (1,))
    d = torch.cat([one, min_derivative + F.softplus(derivatives), one], dim=-1)  # (..., K + 1)

    # bin = number of interior knots <= the input (searchsorted to the right)
    knots = ch if inverse else cw
    idx = (xs.unsqueeze(-1) >= knots[..., 1:-1]).sum(-1, keepdim=True)

    def at(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx).squeeze(-1)

    x_k, w_k, y_k, h_k = at(cw), at(w), at(ch), at(h)
    d_k, d_k1 = at(d[..., :-1]), at(d[..., 1:])
    s_k = h_k / w_k
    slopes = d_k + d_k1 - 2.0 * s_k
    if inverse:
        dy = xs - y_k
        a = dy * slopes + h_k * (s_k - d_k)
        b = h_k * d_k - dy * slopes
        c = -s_k * dy
        disc = torch.clamp(b * b - 4.0 * a * c, min=0.0)  # >= 0 in exact arithmetic
        theta = (2.0 * c) / (-b - torch.sqrt(disc))
        out = theta * w_k + x_k
    else:
        theta = (xs - x_k) / w_k
    t1t = theta * (1.0 - theta)
    denominator = s_k + slopes * t1t
    if not inverse:
        out = y_k + h_k * (s_k * theta * theta + d_k * t1t) / denominator
    numerator = s_k * s_k * (d_k1 * theta * theta + 2.0 * s_k * t1t + d_k * (1.0 - theta) * (1.0 - theta))
    lad = torch.log(numerator) - 2.0 * torch.log(denominator)
    if inverse:
        lad = -lad
    y = torch.where(inside, out, x)
    lad = torch.where(inside, lad, torch.where(torch.isnan(x), x.detach(), torch.zeros_like(x)))
    acc = _logdet_dtype(x)
    logdet = lad.to(acc).reshape(x.shape[0], math.prod(x.shape[1:])).sum(1)
    return y, logdet


def _knot_grads(p: torch.Tensor, idx: torch.Tensor, g_left: torch.Tensor, g_right: torch.Tensor,
                bound: float, min_size: float) -> torch.Tensor:
    """Gradient of the unnormalised sizes (..., K) from those of bin idx's left and right knots:
    knot_i = 2B sum_{j<i} size_j - B for the interior knots, size = min + (1 - K min) p, then the
    softmax backward, its sum from prefix / suffix probabilities (1 - P(before) would cancel)."""
    k = p.shape[-1]
    j = torch.arange(k, device=p.device)
    i = idx.squeeze(-1)
    a = torch.where(i >= 1, g_left, torch.zeros_like(g_left))       # left knot interior
    c = torch.where(i <= k - 2, g_right, torch.zeros_like(g_right))  # right knot interior
    below, above = j < idx, j > idx
    before = (p * below).sum(-1)
    after = (p * above).sum(-1)
    pk = p.gather(-1, idx).squeeze(-1)
    lo = a * (pk + after) + c * after
    mid = -a * before + c * after
    hi = -a * before - c * (before + pk)
    coef = torch.where(below, lo.unsqueeze(-1), torch.where(above, hi.unsqueeze(-1), mid.unsqueeze(-1)))
    return (2.0 * bound * (1.0 - min_size * k)) * p * coef


def rq_spline_backward_ref(grad_y, grad_logdet, x, widths, heights, derivatives, tail_bound, inverse,
                           min_bin_width, min_bin_height, min_derivative):
    """Closed-form gradients in float32 (float64 for float64 inputs), the twin of rq_spline.h's
    RqSplineBackward (same formulas, vectorised): returns the gradients of x, widths, heights and
    derivatives in their dtype. grad_y / grad_logdet None: no gradient flowed into that output."""
    acc = _logdet_dtype(x)
    v, uw, uh, ud = (t.to(acc) for t in (x, widths, heights, derivatives))
    bound, k = float(tail_bound), uw.shape[-1]
    gy = torch.zeros_like(v) if grad_y is None else grad_y.to(acc)
    gl = torch.zeros(x.shape[0], dtype=acc, device=x.device) if grad_logdet is None else grad_logdet.to(acc)
    gl = gl.reshape((-1,) + (1,) * (x.dim() - 1)).expand(x.shape)
    inside = (v >= -bound) & (v <= bound)
    vs = torch.where(inside, v, torch.zeros_like(v))
    cw, w_all = _knots(uw, bound, min_bin_width)
    ch, h_all = _knots(uh, bound, min_bin_height)
    idx = (vs.unsqueeze(-1) >= (ch if inverse else cw)[..., 1:-1]).sum(-1, keepdim=True)
    at = lambda t: t.gather(-1, idx).squeeze(-1)  # noqa: E731
    one = ud.new_ones(ud.shape[:-1] + (1,))
    d = torch.cat([one, min_derivative + F.softplus(ud), one], dim=-1)
    x_k, w, y_k, h, dk, dk1 = at(cw), at(w_all), at(ch), at(h_all), at(d[..., :-1]), at(d[..., 1:])
    s = h / w
    slopes = dk + dk1 - 2.0 * s
    if inverse:
        dy = vs - y_k
        a, b, c = dy * slopes + h * (s - dk), h * dk - dy * slopes, -s * dy
        theta = (2.0 * c) / (-b - torch.sqrt(torch.clamp(b * b - 4.0 * a * c, min=0.0)))
    else:
        theta = (vs - x_k) / w
    om, t1t = 1.0 - theta, theta * (1.0 - theta)
    den = s + slopes * t1t
    den2 = den * den
    q = dk1 * theta * theta + 2.0 * s * t1t + dk * om * om
    numer = s * theta * theta + dk * t1t
    # partials of y (theta, s, h fixed in turn) and of lad = log(s^2 Q) - 2 log den
    y_theta = h * s * q / den2
    y_s = h * t1t * (dk1 * theta * theta - dk * om * om) / den2
    y_dk = h * t1t * om * (s * om + dk1 * theta) / den2
    y_dk1 = -h * t1t * numer / den2
    y_h = numer / den
    l_theta = 2.0 * (dk1 * theta + s * (1.0 - 2.0 * theta) - dk * om) / q - 2.0 * slopes * (1.0 - 2.0 * theta) / den
    l_s = 2.0 / s + 2.0 * t1t / q - 2.0 * (1.0 - 2.0 * t1t) / den
    l_dk = om * om / q - 2.0 * t1t / den
    l_dk1 = theta * theta / q - 2.0 * t1t / den
    if not inverse:  # L = gy y + gl lad
        g_theta = gy * y_theta + gl * l_theta
        g_s, g_dk, g_dk1 = gy * y_s + gl * l_s, gy * y_dk + gl * l_dk, gy * y_dk1 + gl * l_dk1
        g_in = g_theta / w
        g_xk, g_w, g_yk, g_h = -g_in, -g_in * theta, gy, gy * y_h
    else:  # L = gx (x_k + w theta) - gl lad, theta implicit in y = y_k + y_rel(theta)
        qy = (gy * w - gl * l_theta) / y_theta
        g_s, g_dk, g_dk1 = -gl * l_s - qy * y_s, -gl * l_dk - qy * y_dk, -gl * l_dk1 - qy * y_dk1
        g_in, g_yk, g_h, g_xk, g_w = qy, -qy, -qy * y_h, gy, gy * theta
    g_h = g_h + g_s / w  # s = h / w
    g_w = g_w - g_s * s / w
    grad_x = torch.where(inside, g_in, gy)
    zero = torch.zeros_like(g_in)
    keep = lambda g: torch.where(inside.unsqueeze(-1), g, torch.zeros_like(g))  # noqa: E731
    grad_w = keep(_knot_grads(torch.softmax(uw, -1), idx, g_xk - g_w, g_w, bound, min_bin_width))
    grad_h = keep(_knot_grads(torch.softmax(uh, -1), idx, g_yk - g_h, g_h, bound, min_bin_height))
    # d_k = min + softplus(u_{k-1}) (k >= 1), d_{k+1} = min + softplus(u_k) (k <= K - 2)
    pad = torch.zeros(ud.shape[:-1] + (k + 1,), dtype=acc, device=x.device)
    pad = pad.scatter_add(-1, idx, torch.where(inside, g_dk, zero).unsqueeze(-1))
    pad = pad.scatter_add(-1, idx + 1, torch.where(inside, g_dk1, zero).unsqueeze(-1))
    grad_d = pad[..., 1:-1] * torch.sigmoid(ud)
    return grad_x.to(x.dtype), grad_w.to(widths.dtype), grad_h.to(heights.dtype), grad_d.to(derivatives.dtype)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def _logdet_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _rq_spline_kernel(x, widths, heights, derivatives, tail_bound, inverse, min_bin_width, min_bin_height,
                      min_derivative):
    backend = args.choose_backend("rq_spline", x)
    if backend == "torch":
        return rq_spline_ref(x, widths, heights, derivatives, tail_bound=tail_bound, inverse=inverse,
                             min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative)
    n, d = args.rows(x)
    # dense copies held in locals: a temporary's memory would be freed before the kernel reads it
    x_dense, w_dense, h_dense, d_dense = (t.contiguous() for t in (x, widths, heights, derivatives))
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    chunks = args.num_chunks(d)
    partials = args.partial_sums(n, chunks, x)
    if n * d:
        args.kernel(backend, "rq_spline", like=x)(
            x=x_dense.data_ptr(), widths=w_dense.data_ptr(), heights=h_dense.data_ptr(),
            derivatives=d_dense.data_ptr(), y=y.data_ptr(),
            logdet_partials=partials.data_ptr(), N=n, D=d, K=widths.shape[-1], tail_bound=tail_bound,
            min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative,
            inverse=inverse, dtype=_ext.dtype_code(x))
        return y, args.sum_partials(partials, n, chunks)
    return y, torch.zeros(n, dtype=torch.float32, device=x.device)


def _rq_spline_backward_kernel(grad_y, grad_logdet, x, widths, heights, derivatives, tail_bound, inverse,
                               min_bin_width, min_bin_height, min_derivative):
    backend = args.choose_backend("rq_spline", x)
    if backend == "torch":
        return rq_spline_backward_ref(grad_y, grad_logdet, x, widths, heights, derivatives, tail_bound, inverse,
                                      min_bin_width, min_bin_height, min_derivative)
    n, d = args.rows(x)
    x_dense, w_dense, h_dense, d_dense = (t.contiguous() for t in (x, widths, heights, derivatives))
    grads = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, widths, heights, derivatives)]
    grad_y = None if grad_y is None else grad_y.to(x.dtype).contiguous()
    grad_logdet = None if grad_logdet is None else grad_logdet.to(torch.float32).contiguous()
    if n * d:
        args.kernel(backend, "rq_spline_backward", like=x)(
            grad_y=_ext.ptr(grad_y), grad_logdet=_ext.ptr(grad_logdet), x=x_dense.data_ptr(),
            widths=w_dense.data_ptr(), heights=h_dense.data_ptr(),
            derivatives=d_dense.data_ptr(), grad_x=grads[0].data_ptr(),
            grad_widths=grads[1].data_ptr(), grad_heights=grads[2].data_ptr(), grad_derivatives=grads[3].data_ptr(),
            N=n, D=d, K=widths.shape[-1], tail_bound=tail_bound, min_bin_width=min_bin_width,
            min_bin_height=min_bin_height, min_derivative=min_derivative, inverse=inverse, dtype=_ext.dtype_code(x))
    return tuple(grads)


# ---- fakes and autograd --------------------------------------------------------------------------
def _rq_spline_fake(x, widths, heights, derivatives, tail_bound, inverse, min_bin_width, min_bin_height,
                    min_derivative):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0],), dtype=_logdet_dtype(x)))


def _rq_spline_backward_fake(grad_y, grad_logdet, x, widths, heights, derivatives, *params):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, widths, heights, derivatives))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    ctx.params = inputs[4:]


def _backward(ctx, grad_y, grad_logdet):
    grads = rq_spline_backward_op(grad_y, grad_logdet, *ctx.saved_tensors, *ctx.params)
    return (*grads, None, None, None, None, None)


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
_PARAMS = "float tail_bound, bool inverse, float min_bin_width, float min_bin_height, float min_derivative"
rq_spline_op = define(f"rq_spline(Tensor x, Tensor widths, Tensor heights, Tensor derivatives, {_PARAMS}) "
                      "-> (Tensor, Tensor)",
                      impl=_rq_spline_kernel, fake=_rq_spline_fake, setup_context=_setup_context, backward=_backward)
rq_spline_backward_op = define(
    f"rq_spline_backward(Tensor? grad_y, Tensor? grad_logdet, Tensor x, Tensor widths, Tensor heights, "
    f"Tensor derivatives, {_PARAMS}) -> (Tensor, Tensor, Tensor, Tensor)",
    impl=_rq_spline_backward_kernel, fake=_rq_spline_backward_fake)


# ---- public function --------------------------------------------------------------------------
def rq_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, *,
              tail_bound: float = 3.0, inverse: bool = False, min_bin_width: float = 1e-3,
              min_bin_height: float = 1e-3, min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise monotonic rational-quadratic spline on [-tail_bound, tail_bound], identity outside.

    x            (N, *rest) float32 / float16 / bfloat16 (float64 runs the reference)
    widths       (N, *rest, K) unnormalised bin widths (softmax inside), K >= 1, x's dtype and device
    heights      (N, *rest, K) unnormalised bin heights
    derivatives  (N, *rest, K - 1) unnormalised interior-knot derivatives (min_derivative + softplus);
                 the derivatives at +-tail_bound are 1, matching the identity tails
    tail_bound   B > 0: the spline maps [-B, B] onto itself
    inverse      False: y = f(x) and log|dy/dx|; True: x = f^-1(y) (the first argument is then y)
                 and log|dx/dy| = -log|dy/dx|, so forward then inverse log-dets cancel
    min_*        the smallest bin width / height (as a fraction of 2B, K * min < 1) and derivative

    Returns (y, logdet): y of x's shape and dtype, logdet (N,) the per-sample sum of the elementwise
    log-derivatives, float32 for float16/bfloat16 inputs (else x's dtype). Differentiable with
    respect to x, widths, heights and derivatives, through both outputs. An input exactly on a knot
    belongs to the bin on its right; NaN in x gives NaN in y and in its sample's logdet.
    """
    _check_inputs(x, widths, heights, derivatives, tail_bound, inverse, min_bin_width, min_bin_height,
                  min_derivative)
    return rq_spline_op(x, widths, heights, derivatives, float(tail_bound), inverse, float(min_bin_width),
                        float(min_bin_height), float(min_derivative))


def _check_float(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite {'positive' if positive else 'non-negative'} float, got {value}")
    return value


def _check_inputs(x, widths, heights, derivatives, tail_bound, inverse, min_bin_width, min_bin_height,
                  min_derivative) -> int:
    """Validates the public arguments; returns the number of bins K."""
    args.check_tensor("x", x)
    for name, t in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    if widths.dim() != x.dim() + 1 or widths.shape[:-1] != x.shape:
        raise ValueError(f"widths must have shape x.shape + (K,) = {tuple(x.shape)} + (K,), got {tuple(widths.shape)}")
    k = widths.shape[-1]
    if k < 1:
        raise ValueError(f"widths must have K >= 1 bins in its last dimension, got shape {tuple(widths.shape)}")
    if heights.shape != widths.shape:
        raise ValueError(f"heights must have the shape of widths {tuple(widths.shape)}, got {tuple(heights.shape)}")
    if derivatives.shape != x.shape + (k - 1,):
        raise ValueError(f"derivatives must have shape x.shape + (K - 1,) = {tuple(x.shape) + (k - 1,)} for K = {k} "
                         f"bins, got {tuple(derivatives.shape)}")
    _check_float("tail_bound", tail_bound, positive=True)
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if _check_float(name, value) * k >= 1.0:
            raise ValueError(f"{name} * K must be < 1 (the bins must fit in [-B, B]), got {value} * {k}")
    _check_float("min_derivative", min_derivative)
    return k

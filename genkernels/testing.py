"""The accuracy rule every fast path is held to, in one helper.

A fast path's error against a high-precision reference (float64, or fp32 upcast) must be at most
`factor` (2) times the error of the pure-PyTorch reference computed in the same low-precision
dtype, plus a rounding floor. This is the flash-attention test convention: it asks a kernel to be
as accurate as PyTorch itself would be in that dtype, not to meet an arbitrary tolerance.
"""
from __future__ import annotations

import torch

# Rounding floor per storage dtype: about a few ulps at magnitude 1.
DEFAULT_FLOOR = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def _describe_worst(actual, truth, lowp, k=5):
    err = (actual - truth).abs().flatten()
    k = min(k, err.numel())
    values, idx = torch.topk(torch.nan_to_num(err, nan=float("inf")), k)
    lines = []
    for v, i in zip(values.tolist(), idx.tolist()):
        pos = tuple(int(p) for p in torch.unravel_index(torch.tensor(i), actual.shape))
        lines.append(
            f"    at {pos}: fast={actual.flatten()[i].item():.8g} truth={truth.flatten()[i].item():.8g}"
            f" torch-lowp={lowp.flatten()[i].item():.8g} |err|={v:.3g}"
        )
    return "\n".join(lines)


def assert_close_2x(actual, truth, reference_lowp, *, name="output", factor=2.0, floor=None):
    """Assert max|actual - truth| <= factor * max|reference_lowp - truth| + floor.

    actual          the fast path's result (any dtype)
    truth           the reference computed in float64 (or fp32 for inputs already fp32)
    reference_lowp  the pure-PyTorch reference run in the same dtype as `actual`
    floor           absolute rounding floor; default by actual's dtype (DEFAULT_FLOOR)
    """
    if actual.shape != truth.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(truth.shape)}")
    if floor is None:
        floor = DEFAULT_FLOOR.get(actual.dtype, 1e-5)
    a = actual.detach().to("cpu", torch.float64)
    t = truth.detach().to("cpu", torch.float64)
    r = reference_lowp.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return
    nan_a, nan_t = torch.isnan(a), torch.isnan(t)
    if not torch.equal(nan_a, nan_t):
        raise AssertionError(f"{name}: NaN pattern differs from the reference\n" + _describe_worst(a, t, r))
    keep = ~nan_t
    a, t, r = a[keep], t[keep], r[keep]
    if a.numel() == 0:
        return
    err_fast = (a - t).abs().max().item()
    err_ref = torch.nan_to_num((r - t).abs(), nan=0.0).max().item()
    bound = factor * err_ref + floor
    if not err_fast <= bound:
        raise AssertionError(
            f"{name}: max error {err_fast:.4g} exceeds {factor}x torch's {err_ref:.4g} + floor {floor:.3g}"
            f" (dtype {actual.dtype})\n worst elements:\n"
            + _describe_worst(a, t, r)
        )

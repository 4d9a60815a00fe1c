"""The accuracy rule every fast path is held to, in one helper.

A fast path's error against a high-precision reference (float64, or fp32 upcast) must be at most
`factor` (2) times the error of the pure-PyTorch reference computed in the same low-precision
dtype, plus a rounding floor. This is the flash-attention test convention: it asks a kernel to be
as accurate as PyTorch itself would be in that dtype, not to meet an arbitrary tolerance.

The rule is applied per sample (index of the leading dimension), not once per tensor, and twice
per sample: to the largest absolute error and to the mean relative error. One global maximum lets
a batch whose samples differ 1000x in magnitude (t = 0 beside t = T-1) hide a zeroed small sample
under the large one's rounding, and a maximum alone says nothing about the bulk of the elements
(in bf16 the median element could be off by 10% under the largest one's rounding). The mean
relative error weighs every element by its own magnitude, so small elements count as much as
large ones. The floor is relative, `rel_floor` ulps (DEFAULT_REL_FLOOR) of the magnitude it is
compared with, plus that many subnormal ulps so exact zeros must stay exact: an absolute floor
hides whole outputs smaller than it (an fp16 store that flushes subnormals to zero, an all-zero gradient of a
mean-reduced loss), and 1e-5 in fp32 is about 80x torch's own error at magnitude 1.
"""
from __future__ import annotations

import torch

# Default relative floor in ulps, per storage dtype. 16-bit outputs: two ulps, the most a kernel
# that computes in fp32 and rounds once can be off where torch happens to be exact (its fp32
# arithmetic is 2^13 times finer than the storage). fp32 outputs: arithmetic and storage round
# alike, so a result that cancels its terms carries a few ulps of them whoever computes it, and
# torch is exact by luck at single elements: four ulps.
DEFAULT_REL_FLOOR = {torch.float16: 2.0, torch.bfloat16: 2.0, torch.float32: 4.0, torch.float64: 4.0}
# Relative errors are taken against at least this fraction of the sample's largest magnitude: an
# element that cancels to ~0 carries the rounding of its terms (of the sample's scale), and its
# relative error would otherwise let one such element outweigh the rest of the sample.
RELATIVE_TO = 1.0 / 16


def _subnormal_ulp(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.tiny * info.eps  # the smallest subnormal: the absolute rounding step near zero


def _describe_worst(err, actual, truth, lowp, k=5):
    flat = torch.nan_to_num(err, nan=float("inf")).flatten()
    k = min(k, flat.numel())
    values, idx = torch.topk(flat, k)
    lines = []
    for v, i in zip(values.tolist(), idx.tolist()):
        pos = tuple(int(p) for p in torch.unravel_index(torch.tensor(i), actual.shape))
        lines.append(
            f"    at {pos}: fast={actual.flatten()[i].item():.8g} truth={truth.flatten()[i].item():.8g}"
            f" torch-lowp={lowp.flatten()[i].item():.8g} |err|={v:.3g}"
        )
    return "\n".join(lines)


def assert_close_2x(actual, truth, reference_lowp, *, name="output", factor=2.0, floor=None,
                    rel_floor=None, term_scale=None):
    """Assert, for every sample n (index of the leading dimension; a 0-d tensor is one sample):

        max_i |actual - truth|   <= factor * max_i |reference_lowp - truth|   + floor_n
        mean_i |actual - truth| w_i <= factor * mean_i |reference_lowp - truth| w_i + mean_i floor_i w_i

    with w_i = 1 / max(|truth_i|, max_j |truth_j| / 16, subnormal): relative errors, every element
    weighing alike down to a sixteenth of the sample's scale.

    actual          the fast path's result (any dtype)
    truth           the reference computed in float64 (or fp32 for inputs already fp32)
    reference_lowp  the pure-PyTorch reference run in the same dtype as `actual`
    name, factor    the label in the message; the multiple of torch's error allowed (2)
    floor           an absolute floor replacing the relative one, for outputs whose rounding
                    legitimately scales with something other than their own magnitude
    rel_floor       the default floor in ulps of actual's dtype (DEFAULT_REL_FLOOR): floor_n = rel_floor (eps
                    max_i |truth_i| + subnormal), floor_i = rel_floor (1/4 + 3/4 / sqrt(count)) (eps
                    |truth_i| + subnormal), count the number of elements in the sample
    term_scale      optional, broadcastable to actual: the magnitude of the terms each element is
                    computed from (|a| + |b| for a + b). Where an output cancels its terms, a
                    correct kernel is off by ulps of the terms, not of the result: the floors
                    then use max(|truth_i|, term_scale_i) for |truth_i|
    NaN must appear exactly where the truth has NaN and infinities must match exactly; both are
    then left out. Non-finite errors of reference_lowp (its own overflow) count as 0.
    """
    if actual.shape != truth.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(truth.shape)}")
    if reference_lowp.shape != truth.shape:
        raise AssertionError(f"{name}: reference_lowp shape {tuple(reference_lowp.shape)} != truth "
                             f"{tuple(truth.shape)}")
    dtype = actual.dtype if actual.is_floating_point() else torch.float64
    a = actual.detach().to("cpu", torch.float64)
    t = truth.detach().to("cpu", torch.float64)
    r = reference_lowp.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return
    nan_a, nan_t = torch.isnan(a), torch.isnan(t)
    if not torch.equal(nan_a, nan_t):
        err = torch.where(nan_a != nan_t, torch.full_like(a, float("inf")), torch.zeros_like(a))
        raise AssertionError(f"{name}: NaN pattern differs from the reference\n" + _describe_worst(err, a, t, r))
    inf_t = torch.isinf(t)
    inf_bad = (torch.isinf(a) | inf_t) & (a != t) & ~nan_t
    if bool(inf_bad.any()):
        err = torch.where(inf_bad, torch.full_like(a, float("inf")), torch.zeros_like(a))
        raise AssertionError(f"{name}: infinities differ from the reference\n" + _describe_worst(err, a, t, r))
    skip = nan_t | inf_t
    zero = torch.zeros_like(a)
    err_fast = torch.where(skip, zero, (a - t).abs())
    err_ref = torch.where(skip, zero, torch.nan_to_num((r - t).abs(), nan=0.0, posinf=0.0))
    mag = torch.where(skip, zero, t.abs())
    if term_scale is not None:
        terms = torch.as_tensor(term_scale).detach().to("cpu", torch.float64).abs().expand_as(mag)
        mag_floor = torch.where(skip, zero, torch.maximum(mag, terms))
    else:
        mag_floor = mag
    shape = (a.shape[0], -1) if a.dim() else (1, 1)
    err_fast, err_ref, mag, mag_floor, keep = (x.reshape(shape) for x in (err_fast, err_ref, mag, mag_floor, ~skip))
    count = keep.sum(1).clamp(min=1)
    eps, sub = torch.finfo(dtype).eps, _subnormal_ulp(dtype)
    if rel_floor is None:
        rel_floor = DEFAULT_REL_FLOOR.get(dtype, 4.0)
    scale = mag_floor.amax(1, keepdim=True)
    # per element, for the mean: a correctly rounded result is off by a quarter ulp on average
    # (uniform rounding within half an ulp, ulp <= eps |t|), so a quarter of the max rule's floor
    # leaves it twice that whatever torch's own error; a mean of few elements scatters more, and
    # a one-element sample gets the max rule's floor
    few = (0.25 + 0.75 / count.double().sqrt()).unsqueeze(1)
    elem_floor = few * rel_floor * (eps * mag_floor + sub) if floor is None else torch.full_like(mag, floor)
    # relative errors, against at least RELATIVE_TO of the sample's scale
    weight = torch.where(keep, 1.0 / torch.clamp(torch.maximum(mag, RELATIVE_TO * scale), min=sub),
                         torch.zeros_like(mag))
    checks = {
        "max": (err_fast.amax(1), err_ref.amax(1),
                rel_floor * (eps * scale.squeeze(1) + sub) if floor is None
                else torch.full_like(scale.squeeze(1), floor),
                scale.squeeze(1), "scale" if term_scale is not None else "max |truth|"),
        "mean relative": ((err_fast * weight).sum(1) / count, (err_ref * weight).sum(1) / count,
                          (elem_floor * weight).sum(1) / count, mag.sum(1) / count, "mean |truth|"),
    }
    failures = []
    for how, (fast_n, ref_n, floor_n, scale_n, scale_name) in checks.items():
        bound = factor * ref_n + floor_n
        bad = ~(fast_n <= bound)
        for n in bad.nonzero().flatten().tolist()[:3]:
            failures.append(
                f"sample {n}: {how} error {fast_n[n].item():.4g} exceeds {factor}x torch's {ref_n[n].item():.4g}"
                f" + floor {floor_n[n].item():.3g} ({scale_name} {scale_n[n].item():.3g})")
        if int(bad.sum()) > 3:
            failures.append(f"... {int(bad.sum())} of {bad.numel()} samples fail the {how} rule")
    if failures:
        raise AssertionError(
            f"{name} (dtype {actual.dtype}, shape {tuple(actual.shape)}):\n  " + "\n  ".join(failures)
            + "\n worst elements:\n" + _describe_worst(torch.where(skip, zero, (a - t).abs()), a, t, r)
        )

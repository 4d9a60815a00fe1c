"""The accuracy rule itself: the escapes a one-number-per-tensor rule let through are caught, and
what a correct kernel produces (fp32 math, one rounding to the storage dtype) still passes."""
import pytest
import torch

import genkernels
from genkernels.diffusion import make_schedule, q_sample
from genkernels.testing import assert_close_2x
from tests.ops.diffusion_cases import fast_backends

SCHED = make_schedule("linear", 100)


def _old_global_rule(actual, truth, lowp, floor):
    """The rule before it was applied per sample: one max error per tensor, an absolute floor.
    The escapes below are asserted to pass it, so each test shows a bug the old rule missed."""
    a, t, r = (x.double() for x in (actual, truth, lowp))
    return (a - t).abs().max().item() <= 2 * (r - t).abs().max().item() + floor


def _rounded_once(truth, dtype):
    """A correct kernel's result: exact math, one rounding to the storage dtype."""
    return truth.to(dtype)


def _lowp_affine(x, y, a, b, dtype):
    """torch in `dtype` computing a x + b y (rounding after each op), and the float64 truth of
    that computation on the same rounded inputs."""
    x, y, a, b = x.to(dtype), y.to(dtype), a.to(dtype), b.to(dtype)
    truth = a.double() * x.double() + b.double() * y.double()
    return a * x + b * y, truth


def _mixed_magnitude_q_sample(dtype):
    """q_sample of a batch whose samples differ ~1000x in magnitude (t = 0 beside t = T-1)."""
    t = torch.tensor([0, 0, 0, 99])
    x0, noise = torch.randn(4, 256), torch.randn(4, 256)
    x0[:3] *= 1e-3  # at t = 0, x_t is ~x0: a small-data sample beside a pure-noise one
    noise[:3] *= 1e-3
    lowp_in = [v.to(dtype) for v in (x0, noise)]
    truth, _ = q_sample(*(v.double() for v in lowp_in), t, SCHED)
    with genkernels.use_backend("torch"):
        lowp, _ = q_sample(*lowp_in, t, SCHED)
    backend = fast_backends()[0][0] if fast_backends() else "torch"
    with genkernels.use_backend(backend):
        fast, _ = q_sample(*lowp_in, t, SCHED)
    return fast, truth, lowp


def test_zeroed_samples_of_a_mixed_magnitude_batch_are_caught():
    fast, truth, lowp = _mixed_magnitude_q_sample(torch.bfloat16)
    assert_close_2x(fast, truth, lowp)  # the real kernel passes
    broken = fast.clone()
    broken[:3] = 0
    assert _old_global_rule(broken, truth, lowp, floor=1.6e-2)
    with pytest.raises(AssertionError, match="sample 0: max error"):
        assert_close_2x(broken, truth, lowp, name="x_t")


def test_fp16_store_flushing_subnormals_is_caught():
    # a gradient of a mean-reduced loss over 12 x 4097 elements: values ~5e-5, most below fp16's
    # smallest normal 6.1e-5
    x, y = torch.randn(3, 4097), torch.randn(3, 4097)
    c = torch.tensor(2.0 / (12 * 4097))
    lowp, truth = _lowp_affine(x, y, c, -c, torch.float16)
    fast = _rounded_once(truth, torch.float16)
    assert_close_2x(fast, truth, lowp)
    flushed = torch.where(fast.abs() < torch.finfo(torch.float16).tiny, torch.zeros_like(fast), fast)
    assert (flushed == 0).double().mean() > 0.5
    assert _old_global_rule(flushed, truth, lowp, floor=2e-3)
    with pytest.raises(AssertionError, match="error"):
        assert_close_2x(flushed, truth, lowp, name="grad")


def test_bf16_bulk_corruption_below_the_largest_error_is_caught():
    x, y = torch.randn(2, 2048), torch.randn(2, 2048)
    lowp, truth = _lowp_affine(x, y, torch.tensor(0.7), torch.tensor(0.3), torch.bfloat16)
    fast = _rounded_once(truth, torch.bfloat16)
    assert_close_2x(fast, truth, lowp)
    # every element below the median magnitude moved by half of torch's largest error: within
    # any rule on the largest error, but 1.5 ulps or more of each of those elements
    small = truth.abs() <= truth.abs().median()
    shift = 0.5 * (lowp.double() - truth).abs().max()
    broken = torch.where(small, (truth + shift).to(torch.bfloat16), fast)
    assert _old_global_rule(broken, truth, lowp, floor=1.6e-2)
    with pytest.raises(AssertionError, match="mean relative error"):
        assert_close_2x(broken, truth, lowp, name="z")


def test_fp32_floor_is_a_few_ulps_of_the_scale():
    x, y = torch.randn(4, 500), torch.randn(4, 500)
    lowp, truth = _lowp_affine(x, y, torch.tensor(0.6), torch.tensor(0.8), torch.float32)
    fast = _rounded_once(truth, torch.float32)
    assert_close_2x(fast, truth, lowp)
    off = fast + 1e-6  # 8 ulps at magnitude 1, more below it: the old 1e-5 floor was 80 ulps at 1
    assert _old_global_rule(off, truth, lowp, floor=1e-5)
    with pytest.raises(AssertionError, match="exceeds"):
        assert_close_2x(off, truth, lowp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(5))
def test_correctly_rounded_results_pass(dtype, seed):
    """One rounding of the exact result passes for every magnitude, including fp16 subnormals,
    an all-zero sample and a one-element sample, whatever torch's own error is there."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1e-6, 1e-3, 1.0, 300.0, 0.0]).view(5, 1)
    x, y = torch.randn(5, 33, generator=g) * scales, torch.randn(5, 33, generator=g) * scales
    lowp, truth = _lowp_affine(x, y, torch.tensor(0.9), torch.tensor(0.1), dtype)
    assert_close_2x(_rounded_once(truth, dtype), truth, lowp)
    assert_close_2x(_rounded_once(truth[:, :1], dtype), truth[:, :1], lowp[:, :1])
    assert_close_2x(_rounded_once(truth[0, 0], dtype), truth[0, 0], lowp[0, 0])  # 0-d: one sample


def test_real_kernel_outputs_pass_in_every_dtype():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert_close_2x(*_mixed_magnitude_q_sample(dtype), name=f"x_t {dtype}")


def test_nan_inf_shape_and_the_report():
    truth = torch.tensor([[1.0, float("nan"), float("inf")], [2.0, 3.0, 4.0]], dtype=torch.float64)
    good = truth.float()
    assert_close_2x(good, truth, good)
    with pytest.raises(AssertionError, match="NaN pattern"):
        assert_close_2x(torch.nan_to_num(good, nan=0.0), truth, good)
    with pytest.raises(AssertionError, match="NaN pattern"):
        assert_close_2x(torch.where(truth == 2, float("nan"), good), truth, good)
    with pytest.raises(AssertionError, match="infinities"):
        assert_close_2x(torch.where(truth.isinf(), -float("inf"), good), truth, good)
    with pytest.raises(AssertionError, match="shape"):
        assert_close_2x(good[:1], truth, good)
    bad = good.clone()
    bad[1, 2] = 4.5
    with pytest.raises(AssertionError) as info:
        assert_close_2x(bad, truth, good, name="out")
    message = str(info.value)
    assert "out (dtype torch.float32" in message and "sample 1: max error 0.5" in message
    assert "at (1, 2): fast=4.5 truth=4" in message  # the worst elements, at their index


def test_explicit_floor_factor_and_exact_zeros():
    truth = torch.zeros(2, 4, dtype=torch.float64)
    assert_close_2x(truth.float(), truth, truth.float())
    with pytest.raises(AssertionError, match="sample 0"):
        assert_close_2x(torch.full((2, 4), 1e-30), truth, truth.float())  # zeros must stay zeros
    step = 2.0**-10  # exact in float32, so the comparisons below are exact too
    assert_close_2x(torch.full((2, 4), step), truth, truth.float(), floor=step)  # absolute, as before
    lowp = torch.full((2, 4), step)
    assert_close_2x(torch.full((2, 4), 3 * step), truth, lowp, factor=3.0)
    with pytest.raises(AssertionError):
        assert_close_2x(torch.full((2, 4), 3 * step), truth, lowp)

import math

import pytest
import torch

from genkernels.diffusion import SCHEDULES, NoiseSchedule, make_schedule


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("steps", [1, 10, 1000, 4000])
def test_tables_are_consistent(kind, steps):
    s = make_schedule(kind, steps)
    assert s.num_steps == steps and s.betas.dtype == torch.float64
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    torch.testing.assert_close(s.one_minus_alphas_cumprod, 1 - s.alphas_cumprod)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())  # strictly more noise each step
    table = s.table("cpu")
    assert table.shape == (steps, 2) and table.dtype == torch.float64
    assert s.table("cpu") is table  # cached per device


def test_linear_matches_ho_et_al():
    s = make_schedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-05, rel=1e-3)


def test_cosine_matches_closed_form():
    s = make_schedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert s.alphas_cumprod[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)


def test_one_minus_alpha_bar_keeps_precision_near_zero():
    s = make_schedule("linear", 1000, beta_start=1e-8, beta_end=1e-6)
    # 1 - alpha_bar_0 = beta_0 exactly, which 1 - cumprod would lose to cancellation
    assert s.one_minus_alphas_cumprod[0].item() == pytest.approx(1e-8, rel=1e-12)


def test_posterior_coefficients():
    s = make_schedule("cosine", 50)
    t = 20
    ab, ab_prev = s.alphas_cumprod[t], s.alphas_cumprod[t - 1]
    assert s.posterior_variance[t].item() == pytest.approx((s.betas[t] * (1 - ab_prev) / (1 - ab)).item())
    assert s.posterior_mean_coef1[t].item() == pytest.approx((s.betas[t] * ab_prev.sqrt() / (1 - ab)).item())
    assert s.posterior_variance[0].item() == 0.0


def test_errors():
    with pytest.raises(ValueError, match="kind"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule("linear", 0)
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\), got 1.5 at step 1"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call, error, field", [
    (lambda: NoiseSchedule(torch.tensor([0.1, NAN])), ValueError, r"betas must lie in \(0, 1\), got nan at step 1"),
    (lambda: NoiseSchedule(torch.tensor([-0.5, 0.25])), ValueError, "betas must lie in .* got -0.5 at step 0"),
    (lambda: NoiseSchedule(torch.tensor([])), ValueError, "betas must have at least one step"),
    (lambda: make_schedule("linear", -3), ValueError, "num_steps must be a positive int, got -3"),
    (lambda: make_schedule("cosine", 2.5), TypeError, "num_steps must be an int, got float"),
    (lambda: make_schedule("linear", True), TypeError, "num_steps must be an int"),
    (lambda: make_schedule("linear", 10, beta_start=NAN), ValueError, "beta_start must be a finite number"),
    (lambda: make_schedule("linear", 10, beta_end=-0.01), ValueError, r"beta_end must be in \(0, 1\), got -0.01"),
    (lambda: make_schedule("scaled_linear", 10, beta_start=0.0), ValueError, "beta_start must be in"),
    (lambda: make_schedule("scaled_linear", 10, beta_end=1.0), ValueError, "beta_end must be in"),
    (lambda: make_schedule("cosine", 10, s=-0.1), ValueError, "s must be a finite number >= 0, got -0.1"),
    (lambda: make_schedule("cosine", 10, s=INF), ValueError, "s must be a finite number"),
    (lambda: make_schedule("cosine", 10, max_beta=1.5), ValueError, r"max_beta must be in \(0, 1\)"),
    (lambda: make_schedule("sigmoid", 10, start=2.0, end=2.0), ValueError, "start must be smaller than end"),
    (lambda: make_schedule("sigmoid", 10, start=3.0, end=-3.0), ValueError, "start must be smaller than end"),
    (lambda: make_schedule("sigmoid", 10, tau=0.0), ValueError, "tau must be a finite number > 0, got 0.0"),
    (lambda: make_schedule("sigmoid", 10, tau=-1.0), ValueError, "tau must be"),
    (lambda: make_schedule("sigmoid", 10, start=NAN), ValueError, "start must be a finite number"),
    (lambda: make_schedule("sigmoid", 10, tau="1"), TypeError, "tau must be a number, got str"),
])
def test_degenerate_schedules_name_the_field(call, error, field):
    with pytest.raises(error, match=field):
        call()


def test_edge_parameters_that_are_valid():
    assert make_schedule("cosine", 10, s=0.0).num_steps == 10  # s = 0 is Nichol & Dhariwal without offset
    s = make_schedule("sigmoid", 10, start=-1.0, end=1.0, tau=0.5)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())


# ---- sigma space: Karras sigmas and sigma <-> fractional timestep ----
from genkernels.diffusion import karras_sigmas, sigma_to_timestep, timestep_to_sigma  # noqa: E402


def test_karras_sigmas():
    s = karras_sigmas(10, 0.002, 80.0)
    assert s.dtype == torch.float64 and s.shape == (10,)
    assert s[0].item() == 80.0 and s[-1].item() == 0.002 and bool((s[1:] < s[:-1]).all())
    # Karras et al. eq. 5, written out
    i = torch.arange(10, dtype=torch.float64)
    want = (80.0 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(s, want, rtol=1e-12, atol=0)
    assert karras_sigmas(1, 0.1, 5.0).tolist() == [5.0]
    with pytest.raises(ValueError, match="sigma_min must be <= sigma_max"):
        karras_sigmas(5, 2.0, 1.0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        karras_sigmas(0, 0.1, 1.0)
    with pytest.raises(ValueError, match="sigma_min must be a finite number > 0"):
        karras_sigmas(5, 0.0, 1.0)


def test_sigma_timestep_maps():
    sched = make_schedule("linear", 1000)
    torch.testing.assert_close(sched.sigmas, ((1 - sched.alphas_cumprod) / sched.alphas_cumprod).sqrt())
    steps = torch.arange(0, 1000, 37)
    torch.testing.assert_close(sigma_to_timestep(sched, sched.sigmas[steps]), steps.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(timestep_to_sigma(sched, steps), sched.sigmas[steps], rtol=1e-12, atol=0)
    t = torch.tensor([0.25, 10.5, 998.9])
    torch.testing.assert_close(sigma_to_timestep(sched, timestep_to_sigma(sched, t)), t.double(), rtol=0, atol=1e-9)
    # log-sigma interpolation: halfway in t is the geometric mean of the neighbours' sigmas
    mid = timestep_to_sigma(sched, torch.tensor([10.5])).item()
    assert abs(mid - (sched.sigmas[10] * sched.sigmas[11]).sqrt().item()) < 1e-12
    # out of the schedule's range: clamped to its ends
    assert sigma_to_timestep(sched, torch.tensor([1e-9, 1e9])).tolist() == [0.0, 999.0]
    with pytest.raises(ValueError, match="sigma must be > 0"):
        sigma_to_timestep(sched, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="t must lie in"):
        timestep_to_sigma(sched, torch.tensor([1000.0]))

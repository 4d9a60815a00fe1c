"""Noise schedules for diffusion models: linear, scaled-linear, cosine and sigmoid.

A schedule is its betas; everything else is derived in float64. `alphas_cumprod` is alpha-bar_t
= prod_{s<=t} (1 - beta_s), and `one_minus_alphas_cumprod` is computed as -expm1(sum log1p(-beta))
rather than 1 - alpha-bar, so it keeps full relative precision at small t where alpha-bar ~ 1.
The fused ops read a per-device (T, 2) float64 table [alpha-bar, 1 - alpha-bar] (`table(device)`).
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")


class NoiseSchedule:
    """Derived tables of a beta schedule with T = len(betas) steps, t in [0, T).

    Attributes (float64 tensors of shape (T,)): betas, alphas, alphas_cumprod,
    one_minus_alphas_cumprod, alphas_cumprod_prev (alpha-bar_{t-1}, 1 at t=0), sqrt_alphas_cumprod,
    sqrt_one_minus_alphas_cumprod, snr (alpha-bar / (1 - alpha-bar)), log_snr, posterior_variance
    (beta~_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)), posterior_log_variance_clipped,
    posterior_mean_coef1 and posterior_mean_coef2 (mu~ = coef1 x0 + coef2 x_t), sigmas
    (sqrt((1 - alpha-bar) / alpha-bar), the sigma-space noise level of Karras et al. 2022).
    """

    def __init__(self, betas: torch.Tensor, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() == 0:
            raise ValueError("betas must have at least one step, got an empty tensor")
        bad = ~((betas > 0) & (betas < 1))  # NaN fails both comparisons
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"betas must lie in (0, 1), got {betas[i].item()!r} at step {i}")
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        log_cumprod = torch.cumsum(torch.log1p(-betas), 0)
        self.alphas_cumprod = torch.exp(log_cumprod)
        self.one_minus_alphas_cumprod = -torch.expm1(log_cumprod)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        one_minus_prev = torch.cat([betas.new_zeros(1), self.one_minus_alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.sqrt()
        self.snr = self.alphas_cumprod / self.one_minus_alphas_cumprod
        self.log_snr = torch.log(self.snr)
        self.posterior_variance = betas * one_minus_prev / self.one_minus_alphas_cumprod
        # beta~_0 = 0: clip the log as Ho et al. do, using beta~_1 at t = 0
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
            if len(betas) > 1 else betas.clone()
        )
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / self.one_minus_alphas_cumprod
        self.posterior_mean_coef2 = one_minus_prev * self.alphas.sqrt() / self.one_minus_alphas_cumprod
        # sigma-space noise levels (Karras et al. 2022): x_t / sqrt(alpha-bar) = x0 + sigma_t eps
        self.sigmas = (self.one_minus_alphas_cumprod / self.alphas_cumprod).sqrt()
        self._tables: dict[torch.device, torch.Tensor] = {}

    @property
    def num_steps(self) -> int:
        return self.betas.numel()

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, num_steps={self.num_steps})"

    def table(self, device) -> torch.Tensor:
        """(T, 2) float64 [alpha-bar, 1 - alpha-bar] on `device`, cached (the fused ops read it)."""
        cached = self._tables.get(device)  # a tensor's .device, as the ops pass it: every call
        if cached is not None:
            return cached
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        cached = self._tables.get(device)
        if cached is None:
            cached = torch.stack([self.alphas_cumprod, self.one_minus_alphas_cumprod], 1).contiguous().to(device)
            self._tables[device] = cached
        return cached


def linear_schedule(num_steps: int = 1000, beta_start: float | None = None, beta_end: float | None = None):
    """Ho et al. (2020): betas linear from 1e-4 to 0.02 at T=1000, scaled by 1000/T for other T
    (Nichol & Dhariwal 2021) so the total noise stays comparable."""
    _check_steps(num_steps)
    scale = 1000.0 / num_steps
    start = _check_open_unit("beta_start", beta_start) if beta_start is not None else scale * 1e-4
    end = _check_open_unit("beta_end", beta_end) if beta_end is not None else min(scale * 0.02, 0.999)
    return NoiseSchedule(torch.linspace(start, end, num_steps, dtype=torch.float64), "linear")


def scaled_linear_schedule(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
    """Latent diffusion / Stable Diffusion: sqrt(beta) linear, betas = linspace(sqrt b0, sqrt b1)^2."""
    _check_steps(num_steps)
    _check_open_unit("beta_start", beta_start)
    _check_open_unit("beta_end", beta_end)
    betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_steps, dtype=torch.float64) ** 2
    return NoiseSchedule(betas, "scaled_linear")


def _betas_from_alpha_bar(alpha_bar, num_steps: int, max_beta: float) -> torch.Tensor:
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    ab = alpha_bar(t)
    return torch.clamp(1.0 - ab[1:] / ab[:-1], min=1e-12, max=max_beta)


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal (2021): alpha-bar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), betas <= 0.999."""
    _check_steps(num_steps)
    # s < 0 makes alpha-bar rise over the first steps (negative betas, silently clipped)
    _check_number("s", s, low=0.0)
    _check_open_unit("max_beta", max_beta)
    alpha_bar = lambda t: torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return NoiseSchedule(_betas_from_alpha_bar(alpha_bar, num_steps, max_beta), "cosine")


def sigmoid_schedule(num_steps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                     max_beta: float = 0.999):
    """Chen (2023), "On the importance of noise scheduling": alpha-bar(t) follows a sigmoid over
    [start, end] with temperature tau, normalised to 1 at t=0 and 0 at t=1."""
    _check_steps(num_steps)
    _check_number("start", start)
    _check_number("end", end)
    if not start < end:  # start == end divides by zero; start > end is not Chen's schedule
        raise ValueError(f"start must be smaller than end, got start={start!r}, end={end!r}")
    _check_number("tau", tau, low=0.0, open_low=True)
    _check_open_unit("max_beta", max_beta)
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))

    def alpha_bar(t):
        v = torch.sigmoid((t * (end - start) + start) / tau)
        return torch.clamp((v_end - v) / (v_end - v_start), min=1e-9, max=1.0).double()

    return NoiseSchedule(_betas_from_alpha_bar(alpha_bar, num_steps, max_beta), "sigmoid")


def make_schedule(kind: str = "linear", num_steps: int = 1000, **kwargs) -> NoiseSchedule:
    """A schedule by name: one of SCHEDULES, with that schedule's keyword arguments."""
    builders = {"linear": linear_schedule, "scaled_linear": scaled_linear_schedule,
                "cosine": cosine_schedule, "sigmoid": sigmoid_schedule}
    if kind not in builders:
        raise ValueError(f"kind must be one of {SCHEDULES}, got {kind!r}")
    return builders[kind](num_steps, **kwargs)


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float = 5.0,
                    prediction: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for timesteps t, as float32 on t's device.

    The weight min(SNR, gamma) is expressed for the chosen target: divided by SNR for epsilon, by
    SNR + 1 for v, as is for x0 ("sample"). t: integer tensor of steps in [0, T), checked on CPU;
    elsewhere (checking would synchronise) an out-of-range step gives a NaN weight. gamma > 0
    (+inf: no clipping).
    """
    if prediction not in ("epsilon", "sample", "v"):
        raise ValueError(f"prediction must be 'epsilon', 'sample' or 'v', got {prediction!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a number, got {type(gamma).__name__}")
    if not gamma > 0:  # NaN fails too; +inf (no clipping: the plain loss) is allowed
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must be an integer tensor of timesteps, got "
                        f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    T = schedule.num_steps
    if t.device.type == "cpu" and t.numel() and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in t.aminmax())
        if lo < 0 or hi >= T:
            raise ValueError(f"t must be in [0, {T}) for this schedule, got values in [{lo}, {hi}]")
    # on other devices checking would synchronise: an out-of-range step gives NaN, as in the kernels
    inside = (t >= 0) & (t < T)
    snr = schedule.snr.to(t.device)[t.long().clamp(0, T - 1)]
    snr = torch.where(inside, snr, torch.full_like(snr, math.nan))
    clipped = torch.clamp(snr, max=gamma)
    if prediction == "epsilon":
        w = clipped / snr
    elif prediction == "v":
        w = clipped / (snr + 1)
    else:
        w = clipped
    return w.float()


def _check_steps(num_steps):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__} {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def _check_number(name, value, low=None, open_low=False):
    """A finite real number, >= low (> low when open_low)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or (low is not None and (value <= low if open_low else value < low)):
        expected = "a finite number" if low is None else f"a finite number {'>' if open_low else '>='} {low:g}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _check_open_unit(name, value):
    _check_number(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


# ---- sigma space (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models")
def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n noise levels from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (Karras et al.
    eq. 5), as a float64 tensor (n,). Unlike k-diffusion's get_sigmas_karras no final 0 is appended:
    the samplers append it. n = 1 gives [sigma_max]."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    sigma_min = _check_number("sigma_min", sigma_min, low=0.0, open_low=True)
    sigma_max = _check_number("sigma_max", sigma_max, low=0.0, open_low=True)
    if not sigma_min <= sigma_max:
        raise ValueError(f"sigma_min must be <= sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    rho = _check_number("rho", rho, low=0.0, open_low=True)
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min  # exact ends
    return sigmas


def sigma_to_timestep(schedule: NoiseSchedule, sigma) -> torch.Tensor:
    """Fractional timesteps (float64, sigma's shape) whose noise level is `sigma`: log(sigma) is
    interpolated linearly between the schedule's integer steps (as k-diffusion's sigma_to_t and
    diffusers' _sigma_to_t), clamped to [0, T-1]. The inverse of timestep_to_sigma on that range."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64).cpu()
    if bool((~(sigma > 0)).any()):
        raise ValueError(f"sigma must be > 0, got {sigma.flatten()[~(sigma.flatten() > 0)][0].item()!r}")
    log_sigmas = schedule.sigmas.log()
    T = log_sigmas.numel()
    if T == 1:
        return torch.zeros_like(sigma)
    ls = sigma.log()
    lo = (torch.searchsorted(log_sigmas, ls.flatten().contiguous()) - 1).clamp(0, T - 2).view(ls.shape)
    w = ((ls - log_sigmas[lo]) / (log_sigmas[lo + 1] - log_sigmas[lo])).clamp(0, 1)
    return lo.double() + w


def timestep_to_sigma(schedule: NoiseSchedule, t) -> torch.Tensor:
    """Noise levels (float64) at fractional timesteps t in [0, T-1]: log(sigma) interpolated
    linearly between the integer steps (exact at integers)."""
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    T = schedule.num_steps
    if bool(((t < 0) | (t > T - 1) | t.isnan()).any()):
        raise ValueError(f"t must lie in [0, {T - 1}], got values in [{t.min().item()}, {t.max().item()}]")
    log_sigmas = schedule.sigmas.log()
    lo = t.floor().long().clamp(0, max(T - 2, 0))
    hi = (lo + 1).clamp(max=T - 1)
    w = t - lo.double()
    return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

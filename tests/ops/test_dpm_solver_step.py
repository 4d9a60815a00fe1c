import math

import pytest
import torch

import genkernels
from genkernels.diffusion import dpm_solver_step
from genkernels.ops.dpm_solver_step import dpm_solver_step_op
from genkernels.testing import assert_close_2x
from tests.ops.diffusion_cases import DTYPES, SIZES, fast_backends, schedule

SCHED = schedule("cosine", 100)
PREDICTIONS = ["epsilon", "sample", "v"]


def _textbook(m, x, t, t_prev, prediction, m_prev=None, t_last=None, u=None, w=None):
    """DPM-Solver++(2M), midpoint form, as written in Lu et al. 2022 / diffusers, in float64 from the
    schedule's alpha-bar (one timestep for the whole batch)."""
    m, x = m.double(), x.double()
    if u is not None:
        m = u.double() + w * (m - u.double())

    def alpha_sigma(step):
        ab = 1.0 if step < 0 else SCHED.alphas_cumprod[step].item()
        return math.sqrt(ab), math.sqrt(1.0 - ab)

    a_s, s_s = alpha_sigma(t)
    x0 = {"epsilon": (x - s_s * m) / a_s, "sample": m, "v": a_s * x - s_s * m}[prediction]
    a_t, s_t = alpha_sigma(t_prev)
    if t_prev < 0:
        return x0, x0
    lam = lambda a, s: math.log(a) - math.log(s)  # noqa: E731
    h = lam(a_t, s_t) - lam(a_s, s_s)
    out = (s_t / s_s) * x - a_t * (math.exp(-h) - 1.0) * x0
    if m_prev is not None:
        a_l, s_l = alpha_sigma(t_last)
        r0 = (lam(a_s, s_s) - lam(a_l, s_l)) / h
        d1 = (1.0 / r0) * (x0 - m_prev.double())
        out = out - 0.5 * a_t * (math.exp(-h) - 1.0) * d1
    return out, x0


CASES = [  # (t, t_prev, t_last): first order, second order, to the clean sample, large step
    (60, 45, None), (45, 30, 60), (10, -1, 25), (99, 50, None), (50, 5, 99)]


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t,t_prev,t_last", CASES)
@pytest.mark.parametrize("guided", [False, True])
def test_one_step_equals_the_textbook_update(prediction, t, t_prev, t_last, guided):
    g = torch.Generator().manual_seed(t)
    m, x, prev, u = (torch.randn(3, 40, generator=g, dtype=torch.float64) for _ in range(4))
    kw = dict(prediction=prediction)
    if t_last is not None:
        kw.update(x0_prev=prev, t_last=t_last)
    if guided:
        kw.update(guidance_scale=3.5, model_output_uncond=u)
    want, want_x0 = _textbook(m, x, t, t_prev, prediction, prev if t_last else None, t_last,
                              u if guided else None, 3.5)
    out, x0 = dpm_solver_step(m, x, t, t_prev, SCHED, **kw)  # float64: the reference path
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0, want_x0, rtol=1e-10, atol=1e-10)
    for backend, device in fast_backends():  # the fp32 kernels, against the float64 textbook
        kw32 = {k: (v.float().to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        with genkernels.use_backend(backend):
            out32, x032 = dpm_solver_step(m.float().to(device), x.float().to(device), t, t_prev, SCHED, **kw32)
        scale = want.abs().max().item() + x.abs().max().item()
        torch.testing.assert_close(out32.cpu().double(), want, rtol=0, atol=2e-6 * scale)
        torch.testing.assert_close(x032.cpu().double(), want_x0, rtol=0, atol=2e-6 * want_x0.abs().max().item())


def test_final_step_returns_x0_exactly():
    m, x, prev = (torch.randn(2, 9) for _ in range(3))
    out, x0 = dpm_solver_step(m, x, 3, -1, SCHED, prediction="v", x0_prev=prev, t_last=7)
    assert torch.equal(out, x0)


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_matches_reference_2x_rule(backend, device, dtype, size, prediction):
    batch = 4
    g = torch.Generator().manual_seed(size)
    # per-sample steps: a large early step, two second-order steps, the last one to the clean sample
    t = torch.tensor([98, 60, 20, 3], device=device)
    t_prev = torch.tensor([80, 41, 2, -1], device=device)
    t_last = torch.tensor([99, 75, 40, 9], device=device)
    second = size != 1  # size 1: first order
    guided = size in (7, 4097)
    ins = [torch.randn(batch, size, generator=g).to(device, dtype) for _ in range(4)]
    clip = 1.0 if prediction == "sample" else None

    def call(m, x, prev, u):
        kw = dict(prediction=prediction, clip_x0=clip)
        if second:
            kw.update(x0_prev=prev, t_last=t_last)
        if guided:
            kw.update(guidance_scale=3.5, model_output_uncond=u)
        return dpm_solver_step(m, x, t, t_prev, SCHED, **kw)

    with genkernels.use_backend("torch"):
        truth = call(*(v.double() for v in ins))
        lowp = call(*ins)
    with genkernels.use_backend(backend):
        fast = call(*ins)
    for name, f, tr, r in zip(("x_prev", "x0"), fast, truth, lowp):
        assert f.dtype == dtype
        assert_close_2x(f, tr, r, name=name)


def test_nan_propagates():
    m, x = torch.randn(2, 5), torch.randn(2, 5)
    m[0, 1] = math.nan
    out, x0 = dpm_solver_step(m, x, 50, 40, SCHED)
    assert out[0, 1].isnan() and x0[0, 1].isnan() and not out[1].isnan().any()


def test_opcheck_and_compile():
    m, x, prev, u = (torch.randn(3, 4, 5) for _ in range(4))
    table = SCHED.table("cpu")
    op = dpm_solver_step_op.registered
    torch.library.opcheck(op, (m, None, x, None, None, 50, None, 40, None, 0, table, 0, 1.0, math.inf),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op, (m, u, x, prev, torch.tensor([50, 20, 9]), 0, torch.tensor([40, 3, -1]), 0,
                               torch.tensor([60, 30, 12]), 0, table, 2, 2.5, 1.0),
                          test_utils=("test_schema", "test_faketensor"))

    @torch.compile(fullgraph=True, backend="eager")
    def step(m, x, prev):
        return dpm_solver_step(m, x, 50, 40, SCHED, prediction="v", x0_prev=prev, t_last=60)

    got = step(m, x, prev)
    want = dpm_solver_step(m, x, 50, 40, SCHED, prediction="v", x0_prev=prev, t_last=60)
    torch.testing.assert_close(got, want)


def test_bad_inputs():
    m, x = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="t_prev must be smaller than t"):
        dpm_solver_step(m, x, 40, 40, SCHED)
    with pytest.raises(ValueError, match="t must be smaller than t_last"):
        dpm_solver_step(m, x, 40, 30, SCHED, x0_prev=m, t_last=20)
    with pytest.raises(ValueError, match="x0_prev and t_last go together"):
        dpm_solver_step(m, x, 40, 30, SCHED, x0_prev=m)
    with pytest.raises(ValueError, match="x0_prev must have the shape"):
        dpm_solver_step(m, x, 40, 30, SCHED, x0_prev=m[:1], t_last=50)
    with pytest.raises(TypeError, match="x0_prev must have the dtype"):
        dpm_solver_step(m, x, 40, 30, SCHED, x0_prev=m.double(), t_last=50)
    with pytest.raises(ValueError, match="t_prev must be in"):
        dpm_solver_step(m, x, 40, -2, SCHED)
    with pytest.raises(ValueError, match="prediction must be one of"):
        dpm_solver_step(m, x, 40, 30, SCHED, prediction="eps")
    with pytest.raises(ValueError, match="guidance_scale"):
        dpm_solver_step(m, x, 40, 30, SCHED, guidance_scale=2.0)
    with pytest.raises(ValueError, match="model_output must have the shape"):
        dpm_solver_step(m[:, :3], x, 40, 30, SCHED)

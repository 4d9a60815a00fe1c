import pytest
import torch

import genkernels
from genkernels.diffusion import q_sample
from tests.ops.diffusion_cases import DTYPES, SIZES, check_2x, fast_backends, schedule, timesteps_for

SCHED = schedule("cosine", 100)


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_matches_reference_2x_rule(backend, device, dtype, size, prediction):
    batch = 3
    t = timesteps_for(batch, 100, device)
    make = lambda: [torch.randn(batch, size), torch.randn(batch, size)]  # noqa: E731
    check_2x(backend, device, dtype, lambda x0, e: q_sample(x0, e, t, SCHED, prediction), make, ["x0", "noise"])


@pytest.mark.parametrize("backend,device", fast_backends())
def test_scalar_step_and_non_contiguous(backend, device):
    x0 = torch.randn(5, 6, 7, device=device).transpose(1, 2)
    noise = torch.randn(5, 7, 6, device=device)
    with genkernels.use_backend(backend):
        x_t, target = q_sample(x0, noise, 10, SCHED, "v")
    with genkernels.use_backend("torch"):
        ref_xt, ref_target = q_sample(x0, noise, torch.full((5,), 10, device=device), SCHED, "v")
    torch.testing.assert_close(x_t, ref_xt)
    torch.testing.assert_close(target, ref_target)


def test_formula_and_targets():
    x0, noise = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    t = torch.tensor([3, 80])
    a = SCHED.sqrt_alphas_cumprod[t].unsqueeze(1)
    s = SCHED.sqrt_one_minus_alphas_cumprod[t].unsqueeze(1)
    x_t, eps = q_sample(x0, noise, t, SCHED, "epsilon")
    torch.testing.assert_close(x_t, a * x0 + s * noise)
    assert eps is noise
    assert q_sample(x0, noise, t, SCHED, "sample")[1] is x0
    torch.testing.assert_close(q_sample(x0, noise, t, SCHED, "v")[1], a * noise - s * x0)


@pytest.mark.parametrize("backend,device", fast_backends())
def test_zero_size(backend, device):
    with genkernels.use_backend(backend):
        for shape in [(0, 5), (3, 0)]:
            x0 = torch.randn(shape, device=device, requires_grad=True)
            t = torch.zeros(shape[0], dtype=torch.long, device=device)
            x_t, v = q_sample(x0, torch.randn(shape, device=device), t, SCHED, "v")
            assert x_t.shape == shape and v.shape == shape
            (x_t.sum() + v.sum()).backward()
            assert x0.grad.shape == shape


def test_errors_name_the_argument():
    x0 = torch.randn(2, 3)
    with pytest.raises(ValueError, match="noise"):
        q_sample(x0, torch.randn(2, 4), 0, SCHED)
    with pytest.raises(TypeError, match="noise"):
        q_sample(x0, torch.randn(2, 3, dtype=torch.float64), 0, SCHED)
    with pytest.raises(TypeError, match="x0"):
        q_sample(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), 0, SCHED)
    with pytest.raises(ValueError, match=r"t must be in \[0, 100\)"):
        q_sample(x0, torch.randn(2, 3), torch.tensor([0, 100]), SCHED)
    with pytest.raises(ValueError, match="t must be in"):
        q_sample(x0, torch.randn(2, 3), -1, SCHED)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        q_sample(x0, torch.randn(2, 3), torch.tensor([1, 2, 3]), SCHED)
    with pytest.raises(TypeError, match="integer dtype"):
        q_sample(x0, torch.randn(2, 3), torch.tensor([1.0, 2.0]), SCHED)
    with pytest.raises(ValueError, match="prediction"):
        q_sample(x0, torch.randn(2, 3), 0, SCHED, "score")


@pytest.mark.parametrize("permute", [False, True])
def test_opcheck(permute):
    x0, noise = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    if permute:
        x0, noise = x0.permute(0, 2, 1), noise.permute(0, 2, 1)
    x0.requires_grad_()
    table = SCHED.table("cpu")
    torch.library.opcheck(torch.ops.genkernels.q_sample.default, (x0, noise, torch.tensor([0, 5, 99]), 0, table, True))
    torch.library.opcheck(torch.ops.genkernels.q_sample.default, (x0, noise, None, 7, table, False))

import pytest
import torch

import genkernels
from genkernels.diffusion import diffusion_loss, min_snr_weights
from tests.ops.diffusion_cases import DTYPES, SIZES, check_2x, fast_backends, schedule, timesteps_for

SCHED = schedule("linear", 100)


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_matches_reference_2x_rule(backend, device, dtype, size, prediction):
    batch = 3
    t = timesteps_for(batch, 100, device)

    def make():
        return [torch.randn(batch, size), torch.randn(batch, size), torch.randn(batch, size), torch.rand(batch) + 0.5]

    def fn(m, x0, e, w):
        return diffusion_loss(m, x0, e, t, SCHED, prediction, weights=w.float())

    # the loss is a mean over batch * size elements: scale the upstream gradient so the input
    # gradients are O(1) and an all-zero or flushed-to-zero gradient cannot pass
    check_2x(backend, device, dtype, fn, make, ["model_output", "x0", "noise", "weights"], grad_scale=batch * size)


@pytest.mark.parametrize("backend,device", fast_backends())
def test_reduction_none_and_large_sample(backend, device):
    m, x0, e = (torch.randn(2, 3, 50, 70, device=device) for _ in range(3))  # 10500 elements: 3 chunks
    t = torch.tensor([4, 90], device=device)
    with genkernels.use_backend(backend):
        per_sample = diffusion_loss(m, x0, e, t, SCHED, "v", reduction="none")
    target = SCHED.sqrt_alphas_cumprod[t.cpu()].view(2, 1, 1, 1).float() * e.cpu() - \
        SCHED.sqrt_one_minus_alphas_cumprod[t.cpu()].view(2, 1, 1, 1).float() * x0.cpu()
    expected = ((m.cpu() - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(per_sample.cpu(), expected, rtol=1e-5, atol=1e-6)


def test_min_snr_weights():
    t = torch.tensor([0, 50, 99])
    snr = SCHED.snr[t]
    torch.testing.assert_close(min_snr_weights(SCHED, t, 5.0, "epsilon").double(), snr.clamp(max=5) / snr,
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(min_snr_weights(SCHED, t, 5.0, "v").double(), snr.clamp(max=5) / (snr + 1),
                               rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="prediction"):
        min_snr_weights(SCHED, t, 5.0, "score")


def test_zero_batch_and_errors():
    m = torch.randn(0, 4, requires_grad=True)
    loss = diffusion_loss(m, torch.randn(0, 4), torch.randn(0, 4), torch.zeros(0, dtype=torch.long), SCHED,
                          reduction="none")
    assert loss.shape == (0,)
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="reduction"):
        diffusion_loss(x, x, x, 0, SCHED, reduction="sum")
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        diffusion_loss(x, x, x, 0, SCHED, weights=torch.ones(3))
    with pytest.raises(ValueError, match="x0"):
        diffusion_loss(x, torch.randn(2, 5), x, 0, SCHED)


@pytest.mark.parametrize("permute", [False, True])
def test_opcheck(permute):
    m, x0, e = (torch.randn(3, 4, 5) for _ in range(3))
    if permute:
        m, x0, e = (v.transpose(1, 2) for v in (m, x0, e))
    m.requires_grad_()
    table = SCHED.table("cpu")
    for prediction in (0, 2):
        torch.library.opcheck(torch.ops.genkernels.diffusion_sse.default,
                              (m, x0, e, torch.tensor([0, 5, 99]), 0, table, prediction))


def test_min_snr_weights_errors_and_out_of_range_steps():
    t = torch.tensor([0, 50])
    with pytest.raises(ValueError, match="gamma must be > 0, got -1.0"):
        min_snr_weights(SCHED, t, -1.0)
    with pytest.raises(ValueError, match="gamma must be > 0, got 0"):
        min_snr_weights(SCHED, t, 0)
    with pytest.raises(ValueError, match="gamma must be > 0, got nan"):
        min_snr_weights(SCHED, t, float("nan"))
    with pytest.raises(TypeError, match="gamma must be a number"):
        min_snr_weights(SCHED, t, None)
    with pytest.raises(ValueError, match=r"t must be in \[0, 100\) for this schedule, got values in \[-1, 50\]"):
        min_snr_weights(SCHED, torch.tensor([-1, 50]))  # indexing would silently read step 99
    with pytest.raises(ValueError, match=r"t must be in \[0, 100\)"):
        min_snr_weights(SCHED, torch.tensor([100]))
    with pytest.raises(TypeError, match="t must be an integer tensor"):
        min_snr_weights(SCHED, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="t must be an integer tensor"):
        min_snr_weights(SCHED, 5)
    torch.testing.assert_close(min_snr_weights(SCHED, t, float("inf")), torch.ones(2))  # no clipping: plain loss
    assert min_snr_weights(SCHED, torch.zeros(0, dtype=torch.long)).shape == (0,)

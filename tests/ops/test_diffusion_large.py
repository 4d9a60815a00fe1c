"""Tensors past 2^31 elements (64-bit indexing) and CPU/GPU agreement of the in-kernel noise."""
import pytest
import torch

import genkernels
from genkernels.diffusion import ddpm_step, make_schedule, q_sample
from tests.helpers import requires_cuda

SCHED = make_schedule("linear", 100)


def _available_memory_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


@pytest.mark.skipif(_available_memory_gib() < 14, reason="needs ~10 GiB of free host memory")
def test_q_sample_past_2_pow_31_elements():
    n, d = 2, 2**30 + 3  # 2^31 + 6 elements: flat indices overflow int32
    x0 = torch.ones(n, d, dtype=torch.bfloat16)
    x0[1, -1] = 3.0
    with genkernels.use_backend("cpu"):
        x_t, _ = q_sample(x0, x0, torch.tensor([10, 90]), SCHED)  # noise = x0: no third buffer
    del x0
    a = SCHED.sqrt_alphas_cumprod
    s = SCHED.sqrt_one_minus_alphas_cumprod
    expected_last = ((a[90] + s[90]) * 3.0).item()
    assert x_t[1, -1].item() == pytest.approx(expected_last, rel=1e-2)
    assert x_t[0, -1].item() == pytest.approx((a[10] + s[10]).item(), rel=1e-2)
    assert x_t[1, 0].item() == pytest.approx((a[90] + s[90]).item(), rel=1e-2)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_and_gpu_draw_the_same_samples(dtype):
    x = torch.randn(4, 3, 33, dtype=dtype)
    m = torch.randn_like(x)
    with genkernels.use_backend("cpu"):
        cpu = ddpm_step(m, x, 50, SCHED, seed=5)
    with genkernels.use_backend("cuda"):
        gpu = ddpm_step(m.cuda(), x.cuda(), 50, SCHED, seed=5)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)


@requires_cuda
def test_gpu_runs_on_the_current_stream_of_the_tensors_device():
    x = torch.randn(8, 1000, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, _ = q_sample(x, x, 3, SCHED)
    stream.synchronize()
    with genkernels.use_backend("torch"):
        ref, _ = q_sample(x, x, 3, SCHED)
    torch.testing.assert_close(out, ref)

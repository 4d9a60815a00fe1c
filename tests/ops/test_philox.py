import pytest
import torch

import genkernels
from genkernels.ops.philox import philox_normal, philox_normal_ref
from tests.ops.diffusion_cases import fast_backends


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 4097), (5, 2, 3)])
def test_kernel_matches_reference_stream(backend, device, shape):
    with genkernels.use_backend(backend):
        fast = philox_normal(shape, seed=2**40 + 5, offset=2**33 + 1, device=device)
    ref = philox_normal_ref(shape[0], int(torch.tensor(shape[1:]).prod()), 2**40 + 5, 2**33 + 1).view(shape)
    torch.testing.assert_close(fast.cpu(), ref, rtol=2e-6, atol=2e-6)  # libm ulp differences only


def test_known_answer_philox4x32_10():
    """Random123's published known-answer test: counter and key all ones (0xffffffff)."""
    from genkernels.ops.philox import _philox4x32_10

    ones = torch.tensor([0xFFFFFFFF])
    out = _philox4x32_10(ones, ones, ones, ones, 0xFFFFFFFF, 0xFFFFFFFF)
    assert [int(o) for o in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_statistics_and_independence():
    z = philox_normal((8, 20000), seed=1)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs(torch.corrcoef(z[:2])[0, 1].item()) < 0.03  # samples draw independent streams
    assert not torch.equal(philox_normal((1, 8), 1, offset=0), philox_normal((1, 8), 1, offset=1))


def test_errors():
    with pytest.raises(ValueError, match="seed"):
        philox_normal((2, 2), seed=-1)
    with pytest.raises(TypeError, match="offset"):
        philox_normal((2, 2), seed=1, offset=1.5)


def test_dtypes():
    z32 = philox_normal((3, 10), seed=4, offset=2)
    z64 = philox_normal((3, 10), seed=4, offset=2, dtype=torch.float64)
    assert z64.dtype == torch.float64
    assert torch.equal(z64, philox_normal_ref(3, 10, 4, 2).double())  # the float32 draws, exactly
    torch.testing.assert_close(z64.float(), z32, rtol=2e-6, atol=2e-6)
    for half in (torch.float16, torch.bfloat16):
        assert philox_normal((3, 10), seed=4, dtype=half).dtype == half
    for bad in (torch.int64, torch.bool, torch.complex64, "float32"):
        with pytest.raises(TypeError, match="dtype must be torch.float32, float16, bfloat16 or float64"):
            philox_normal((2, 2), seed=1, dtype=bad)

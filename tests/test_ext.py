"""The compiled modules' calling convention: every kernel entry point takes keyword arguments only,
named as in csrc/<family>/<family>_args.h, so a swapped or misspelled argument is a TypeError; and
csrc/common/ depends on no family."""
import inspect
import re
from pathlib import Path

import pytest
import torch

from genkernels import _ext

CSRC = Path(__file__).resolve().parents[1] / "csrc"
KERNELS = ("philox_normal", "q_sample", "q_sample_backward", "diffusion_sse", "diffusion_sse_backward",
           "sampler_step", "sampler_step_backward", "reparam_kl", "reparam_kl_backward")

needs_c = pytest.mark.skipif(_ext._C is None, reason="genkernels._C is not built")


def keyword_names(function) -> list[str]:
    parameters = inspect.signature(function).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), parameters
    return [p.name for p in parameters]


def philox_kwargs(out: torch.Tensor) -> dict:
    return dict(out=out.data_ptr(), N=out.shape[0], D=out.shape[1], seed=3, offset=1, dtype=_ext.dtype_code(out))


@needs_c
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_take_keywords_only(kernel):
    function = getattr(_ext._C, kernel)
    names = keyword_names(function)
    assert len(names) == len(set(names)) >= 6 and {"N", "D"} < set(names) and names[-1] == "dtype", names
    with pytest.raises(TypeError, match=f"{kernel}\\(\\) takes keyword arguments only"):
        function(*range(len(names)))


@needs_c
def test_a_misspelled_or_missing_keyword_is_a_type_error():
    out, again = torch.empty(2, 8), torch.zeros(2, 8)
    _ext._C.philox_normal(**philox_kwargs(out))
    _ext._C.philox_normal(**philox_kwargs(again))
    assert torch.equal(out, again) and out.std() > 0.5
    misspelled = philox_kwargs(out)
    misspelled["sead"] = misspelled.pop("seed")
    with pytest.raises(TypeError, match="philox_normal\\(\\) got an unexpected keyword argument 'sead'"):
        _ext._C.philox_normal(**misspelled)
    missing = philox_kwargs(out)
    del missing["offset"]
    with pytest.raises(TypeError, match="philox_normal\\(\\) missing keyword argument 'offset'"):
        _ext._C.philox_normal(**missing)
    with pytest.raises(TypeError, match="argument 'seed' must be an int, got float"):
        _ext._C.philox_normal(**{**philox_kwargs(out), "seed": 1.0})
    with pytest.raises(OverflowError, match="argument 'offset' is out of range"):
        _ext._C.philox_normal(**{**philox_kwargs(out), "offset": -1})
    with pytest.raises(TypeError, match="argument 'large_variance' must be a bool"):
        _ext._C.sampler_step_backward(**dict.fromkeys(keyword_names(_ext._C.sampler_step_backward), 0))


@needs_c
def test_bad_codes_name_the_op_and_the_argument():
    step = dict(model_output=0, model_output_uncond=0, x_t=0, out=0, t=0, t_scalar=0, t_prev=0, t_prev_scalar=0,
                table=0, T=1, guidance=1.0, clip=1.0, eta=0.0, large_variance=False, seed=0, offset=0, N=0, D=0,
                dtype=0)
    with pytest.raises(ValueError, match=r"sampler_step: prediction code must be 0 \(epsilon\), 1 \(sample\) or 2"
                                         r" \(v\), got 3"):
        _ext._C.sampler_step(kind=0, prediction=3, **step)
    with pytest.raises(ValueError, match=r"sampler_step: kind must be 0 \(DDPM\) or 1 \(DDIM\), got 2"):
        _ext._C.sampler_step(kind=2, prediction=0, **step)
    with pytest.raises(ValueError, match="sampler_step: unsupported dtype code 7"):
        _ext._C.sampler_step(kind=1, prediction=2, **{**step, "dtype": 7})


@pytest.mark.skipif(_ext._C is None or _ext._cuda is None, reason="needs both compiled modules")
@pytest.mark.parametrize("kernel", KERNELS)
def test_cuda_entry_points_take_the_cpu_names_plus_device_and_stream(kernel):
    assert keyword_names(getattr(_ext._cuda, kernel)) == keyword_names(getattr(_ext._C, kernel)) + ["device", "stream"]


def test_common_includes_no_family_header():
    includes = {(path.name, header) for path in (CSRC / "common").iterdir()
                for header in re.findall(r'#include\s+"([^"]+)"', path.read_text())}
    assert includes, "csrc/common has no local includes: the scan is broken"
    assert [each for each in includes if not each[1].startswith("common/")] == []

"""The masked-conv kernels compile for sm_90 (H100/H200) with the tiles the launchers pick for large
problems, with no GPU present (the interpreter, tests/ops/test_masked_conv.py, checks the math but
not what only the compiler sees: tile shapes the tensor-core path rejects, shared-memory overflow)."""
import os

import pytest
import triton

from genkernels.kernels import _conv as conv_tiles
from genkernels.kernels import masked_conv as kernels
from tests.helpers import rerun_without_interpreter

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - very old triton
    GPUTarget = ASTSource = None

SHARED_LIMIT = {90: 227 * 1024}  # per-block opt-in maximum, bytes
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
POINTERS = ("X", "WT", "BIAS", "COND", "OUT", "DPRE", "DWT")


def _compile(fn, constexprs, num_warps, arch, tensor):
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "TAPS":
            signature[name] = "*i32"
        elif name == "DWT":
            signature[name] = "*fp32"
        elif name in POINTERS:
            signature[name] = tensor
        else:
            signature[name] = "i32"
    source = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps))
    except RuntimeError as exc:  # no ptxas in this triton build
        if "ptxas" in str(exc).lower() and "not found" in str(exc).lower():
            pytest.skip(str(exc))
        raise


@pytest.mark.skipif(not INTERPRETING, reason="the compile tests run in this process")
def test_compile_checks_in_a_fresh_process():
    rerun_without_interpreter(__file__)


@pytest.fixture
def generation(monkeypatch, request):
    if INTERPRETING:
        pytest.skip("compiled in a fresh process (test_compile_checks_in_a_fresh_process)")
    if ASTSource is None:
        pytest.skip("this triton cannot compile ahead of time")
    monkeypatch.setattr(conv_tiles, "capability", lambda: (request.param // 10, request.param % 10))
    monkeypatch.setattr(kernels, "dot_mode", lambda dtype, allow_tf32: 0)
    return request.param


@pytest.mark.parametrize("generation", [90], indirect=True, ids=["sm90"])
@pytest.mark.parametrize("tensor", ["*bf16", "*fp32"])
def test_kernels_compile(generation, tensor):
    tiles = kernels._tiles(8 * 32 * 32, 128, 128)
    num_warps = tiles.pop("num_warps")
    for gated in (False, True):
        flags = dict(HAS_BIAS=True, GATED=gated, HAS_COND=gated, DOT_MODE=0, **tiles)
        compiled = _compile(kernels._masked_conv_fwd_kernel, flags, num_warps, generation, tensor)
        assert compiled.metadata.shared <= SHARED_LIMIT[generation]
        if tensor == "*bf16":
            assert "mma" in compiled.asm["ptx"], "no tensor-core instructions"
    tiles = kernels._weight_grad_tiles(128, 128, 8 * 32 * 32)
    num_warps = tiles.pop("num_warps")
    compiled = _compile(kernels._masked_conv_dw_kernel, dict(DOT_MODE=0, **tiles), num_warps, generation, tensor)
    assert compiled.metadata.shared <= SHARED_LIMIT[generation]

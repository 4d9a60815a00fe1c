"""The attention kernels compile for the GPUs they are tuned for, with no GPU present.

The interpreter (tests/ops/test_attention.py) checks the math but not what only the compiler
sees: tile shapes that overflow shared memory, layouts the tensor-core path rejects, a TMA path
that no longer lowers to bulk copies. Each config of the per-generation lists is compiled here
for sm_90 and sm_80 with Triton's bundled ptxas (about 2 s each).
"""
import os

import pytest
import triton

from genkernels.kernels import attention as kernels
from genkernels.kernels import attention_decode as decode_kernels
from tests.helpers import rerun_without_interpreter

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - very old triton
    GPUTarget = ASTSource = None

SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # per-block opt-in maximum, bytes
POINTERS = {"LSE": "*fp32", "KEY_MASK": "*u8", "CU_SEQLENS_Q": "*i32", "CU_SEQLENS_K": "*i32", "Delta": "*fp32",
            "CACHE_SEQLENS": "*i32", "OutPartial": "*fp32", "LSEPartial": "*fp32"}


def _compile(fn, constexprs, num_warps, num_stages, arch, tensor="*bf16", pointers=None):
    signature = {}
    pointers = {**POINTERS, **(pointers or {})}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        elif name[0].isupper():  # tensors: Q, K, V, Out, DOut, DQ, ...
            signature[name] = tensor
        else:
            signature[name] = "fp32" if "scale" in name else "i32"
    source = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    except RuntimeError as exc:  # no ptxas in this triton build
        if "ptxas" in str(exc).lower() and "not found" in str(exc).lower():
            pytest.skip(str(exc))
        raise


INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(not INTERPRETING, reason="the compile tests run in this process")
def test_compile_checks_in_a_fresh_process():
    rerun_without_interpreter(__file__)


@pytest.fixture
def generation(monkeypatch, request):
    """Make the config lists answer for a GPU of the given compute capability."""
    if INTERPRETING:
        pytest.skip("compiled in a fresh process (test_compile_checks_in_a_fresh_process)")
    if ASTSource is None:
        pytest.skip("this triton cannot compile ahead of time")
    monkeypatch.setattr(kernels, "triton_interpret", lambda: False)
    monkeypatch.setattr(decode_kernels, "triton_interpret", lambda: False)
    monkeypatch.setattr(kernels, "_capability", lambda: (request.param // 10, request.param % 10))
    return request.param


@pytest.mark.parametrize("generation", [90, 80], indirect=True, ids=["sm90", "sm80"])
@pytest.mark.parametrize("block_d", [64, 128, 256])
def test_forward_configs_compile(generation, block_d):
    for config in kernels._forward_configs(block_d, 2, tma=True):
        meta = dict(config.kwargs)
        constexprs = dict(IS_CAUSAL=True, HAS_KEY_MASK=False, IS_VARLEN=False, EVEN_D=True, DOT_MODE=0,
                          BLOCK_D=block_d, **meta)
        compiled = _compile(kernels._attn_fwd_kernel, constexprs, config.num_warps, config.num_stages, generation)
        ptx = compiled.asm["ptx"]
        assert compiled.metadata.shared <= SHARED_LIMIT[generation], (meta, compiled.metadata.shared)
        if generation == 90:
            assert "wgmma" in ptx, f"{meta}: no Hopper tensor-core instructions"
        else:
            assert "mma.sync" in ptx, f"{meta}: no tensor-core instructions"
        assert ("cp.async.bulk.tensor" in ptx) == bool(meta["USE_TMA"]), meta


@pytest.mark.parametrize("generation", [90, 80], indirect=True, ids=["sm90", "sm80"])
@pytest.mark.parametrize("block_d", [64, 128, 256])
def test_backward_config_compiles(generation, block_d):
    cfg = kernels.backward_config(block_d, 2)
    # The default (pointer loads, varlen and masks on); on Hopper also the opt-in descriptor loads.
    variants = [dict(IS_VARLEN=True, HAS_KEY_MASK=True, USE_TMA=False)]
    if generation >= 90 and block_d <= 128:
        variants.append(dict(IS_VARLEN=False, HAS_KEY_MASK=False, USE_TMA=True))
    for variant in variants:
        common = dict(IS_CAUSAL=True, DOT_MODE=0, FP64_DS=False, BLOCK_D=block_d, **variant)
        for fn, tiles in ((kernels._attn_bwd_dkdv_kernel, dict(BLOCK_M=cfg["DKDV_M"], BLOCK_N=cfg["DKDV_N"])),
                          (kernels._attn_bwd_dq_kernel, dict(BLOCK_M=cfg["DQ_M"], BLOCK_N=cfg["DQ_N"], EVEN_D=True))):
            compiled = _compile(fn, dict(common, **tiles), cfg["num_warps"], cfg["num_stages"], generation)
            assert compiled.metadata.shared <= SHARED_LIMIT[generation], (fn.__name__, cfg, compiled.metadata.shared)
            assert ("cp.async.bulk.tensor" in compiled.asm["ptx"]) == variant["USE_TMA"], (fn.__name__, variant)


@pytest.mark.parametrize("generation", [90, 80], indirect=True, ids=["sm90", "sm80"])
@pytest.mark.parametrize("block_d", [64, 128])
def test_decode_split_kernel_compiles(generation, block_d):
    # Causal, so the non-finite-value branch on the diagonal (_split_nonfinite_values) is compiled too.
    cfg = decode_kernels.decode_config(block_d, 2)
    constexprs = dict(IS_CAUSAL=True, DOT_MODE=0, BLOCK_D=block_d, BLOCK_M=16, BLOCK_N=cfg["BLOCK_N"])
    compiled = _compile(decode_kernels._attn_decode_split_kernel, constexprs, cfg["num_warps"], cfg["num_stages"],
                        generation)
    assert compiled.metadata.shared <= SHARED_LIMIT[generation], (cfg, compiled.metadata.shared)
    assert "mma" in compiled.asm["ptx"], f"{cfg}: no tensor-core instructions"


@pytest.mark.parametrize("generation", [90, 80], indirect=True, ids=["sm90", "sm80"])
@pytest.mark.parametrize("block_d", [64, 128])
def test_fp32_backward_with_float64_dp_compiles(generation, block_d):
    # The fp32 (IEEE) backward takes dp = do . v and delta in float64 (FP64_DS): those kernels must
    # still compile within shared memory with the fp32 tiles.
    cfg = kernels.backward_config(block_d, 4)
    common = dict(IS_CAUSAL=True, HAS_KEY_MASK=True, IS_VARLEN=False, USE_TMA=False, DOT_MODE=0, FP64_DS=True,
                  BLOCK_D=block_d)
    fp64 = {"Delta": "*fp64"}
    for fn, tiles in ((kernels._attn_bwd_dkdv_kernel, dict(BLOCK_M=cfg["DKDV_M"], BLOCK_N=cfg["DKDV_N"])),
                      (kernels._attn_bwd_dq_kernel, dict(BLOCK_M=cfg["DQ_M"], BLOCK_N=cfg["DQ_N"], EVEN_D=True))):
        compiled = _compile(fn, dict(common, **tiles), cfg["num_warps"], cfg["num_stages"], generation, "*fp32", fp64)
        assert compiled.metadata.shared <= SHARED_LIMIT[generation], (fn.__name__, cfg, compiled.metadata.shared)
    pre = dict(HAS_DLSE=True, IS_VARLEN=False, FP64_DS=True, BLOCK_D=block_d, BLOCK_M=64)
    _compile(kernels._attn_bwd_preprocess_kernel, pre, 4, 1, generation, "*fp32", {"Delta": "*fp64", "DLSE": "*fp32"})

import os
import subprocess
import sys

import pytest
import torch

import genkernels
from genkernels import _backend, _ext
from genkernels.diffusion import make_schedule, q_sample


def test_default_picks_cpp_on_cpu():
    assert _backend.select("q_sample", torch.device("cpu"), ("torch", "cpu", "cuda")) == "cpu"
    assert _backend.select("attention", torch.device("cpu"), ("torch", "triton")) == "torch"


def test_use_backend_overrides_and_nests():
    with genkernels.use_backend("torch"):
        assert _backend.select("q_sample", torch.device("cpu"), ("torch", "cpu")) == "torch"
        with genkernels.use_backend(None):
            assert _backend.select("q_sample", torch.device("cpu"), ("torch", "cpu")) == "cpu"
    assert _backend.forced_backend() is None


def test_unavailable_backend_raises_with_reason():
    with genkernels.use_backend("cuda"), pytest.raises(ValueError, match="cuda backend runs on CUDA tensors"):
        q_sample(torch.randn(2, 3), torch.randn(2, 3), 0, make_schedule("linear", 10))
    with genkernels.use_backend("triton"), pytest.raises(ValueError, match="implements only"):
        q_sample(torch.randn(2, 3), torch.randn(2, 3), 0, make_schedule("linear", 10))
    with pytest.raises(ValueError, match="backend must be one of"):
        with genkernels.use_backend("metal"):
            pass


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("GENKERNELS_BACKEND", "torch")
    _backend.reload_environment()  # read once at import (it is on every op call's path)
    try:
        assert _backend.select("q_sample", torch.device("cpu"), ("torch", "cpu")) == "torch"
        x_t, _ = q_sample(torch.ones(1, 3), torch.ones(1, 3), 0, make_schedule("linear", 10))
        with genkernels.use_backend("cpu"):  # the context manager wins over the environment
            assert _backend.select("q_sample", torch.device("cpu"), ("torch", "cpu")) == "cpu"
        monkeypatch.setenv("GENKERNELS_BACKEND", "nope")
        assert _backend.forced_backend() == "torch"  # not re-read until reload_environment
        _backend.reload_environment()
        with pytest.raises(ValueError, match="backend must be one of"):
            _backend.forced_backend()
        with pytest.raises(ValueError, match="backend must be one of"):
            q_sample(torch.ones(1, 3), torch.ones(1, 3), 0, make_schedule("linear", 10))
    finally:
        monkeypatch.undo()
        _backend.reload_environment()
    assert _backend.forced_backend() is None


def test_environment_variable_is_read_at_import():
    code = ("import torch, genkernels\nfrom genkernels import _backend\n"
            "print(_backend.select('q_sample', torch.device('cpu'), ('torch', 'cpu')))\n")
    env = dict(os.environ, GENKERNELS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"


def test_float64_uses_reference_automatically():
    x = torch.randn(2, 3, dtype=torch.float64)
    x_t, _ = q_sample(x, x, 1, make_schedule("linear", 10))
    assert x_t.dtype == torch.float64
    with genkernels.use_backend("cpu"), pytest.raises(ValueError, match="float32/float16/bfloat16"):
        q_sample(x, x, 1, make_schedule("linear", 10))


def test_available_backends_reports_reasons():
    table = genkernels.available_backends()
    assert set(table) == set(genkernels.BACKENDS)
    assert table["torch"]["cpu"] is None
    assert table["cuda"]["cpu"] is not None  # a reason string, never a crash


def test_cuda_module_imports_without_a_gpu():
    if _ext._cuda is None:
        pytest.skip(f"CUDA module not built: {_ext.CUDA_ERROR}")
    count, err = _ext.cuda_device_count()
    assert count >= 0
    if not torch.cuda.is_available():
        assert count == 0


def test_source_tree_without_extension_falls_back_to_reference():
    code = (
        "import sys; sys.modules['genkernels._C'] = None; sys.modules['genkernels._cuda'] = None\n"
        "import torch, genkernels\n"
        "from genkernels import _backend\n"
        "from genkernels.diffusion import make_schedule, q_sample\n"
        "assert _backend.select('q_sample', torch.device('cpu'), ('torch', 'cpu')) == 'torch'\n"
        "x = torch.randn(2, 3)\n"
        "print(q_sample(x, x, 1, make_schedule('linear', 10))[0].shape)\n"
        "try:\n"
        "    with genkernels.use_backend('cpu'): q_sample(x, x, 1, make_schedule('linear', 10))\n"
        "except ValueError as e: print('raised', 'not built' in str(e))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GENKERNELS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2, 3])" in out.stdout and "raised True" in out.stdout


def test_cuda_kernels_raise_a_clear_error_without_a_gpu():
    if _ext._cuda is None or torch.cuda.is_available():
        pytest.skip("needs the CUDA module built on a machine without a GPU")
    with pytest.raises(RuntimeError, match="genkernels"):
        _ext._cuda.philox_normal(out=0, N=1, D=4, seed=0, offset=0, dtype=0, device=0, stream=0)

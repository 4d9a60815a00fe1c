"""genkernels.kernels._launch: the launch helpers every Triton-backed op shares."""
import contextlib

import torch
from torch.library import wrap_triton
from torch.overrides import TorchFunctionMode

from genkernels.kernels import _launch


def test_plain_tensors_launch_directly_and_traced_calls_through_wrap_triton():
    x = torch.zeros(3)
    assert _launch.launcher(x, None) is _launch.identity
    assert _launch.identity(len) is len
    with TorchFunctionMode():  # anything that may trace records the launch instead
        assert _launch.launcher(x) is wrap_triton
    assert _launch.launcher(torch.nn.Parameter(x)) is _launch.identity


def test_device_scope_only_for_direct_cuda_launches():
    assert isinstance(_launch.device_scope(torch.zeros(1), _launch.identity), contextlib.nullcontext)
    assert isinstance(_launch.device_scope(torch.zeros(1), wrap_triton), contextlib.nullcontext)


def test_capability_without_a_gpu_is_zero(monkeypatch):
    monkeypatch.setattr(_launch, "triton_interpret", lambda: True)
    assert _launch.capability() == (0, 0)
    if not torch.cuda.is_available():
        monkeypatch.setattr(_launch, "triton_interpret", lambda: False)
        assert _launch.capability() == (0, 0)

"""Small shared test utilities (the accuracy rule itself lives in genkernels.testing)."""
import os

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]



def triton_device():
    """Where Triton kernels can run in this session: "cpu" in the interpreter, else "cuda", else None."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def triton_test(fn):
    """Run a test on the Triton kernels: in the interpreter on CPU (--triton-interpret), else on a
    GPU when one is present, with tensors created on that device (conftest's `on_triton_device`)."""
    fn = pytest.mark.usefixtures("on_triton_device")(fn)
    return pytest.mark.skipif(
        triton_device() is None,
        reason="Triton kernels need a GPU, or the interpreter on CPU: run pytest with --triton-interpret",
    )(fn)

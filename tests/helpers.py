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


def rerun_without_interpreter(test_file: str) -> None:
    """Run `test_file` again in a fresh pytest process without TRITON_INTERPRET: under the
    interpreter (set for the whole session by --triton-interpret) @triton.jit builds interpreted
    functions, which the ahead-of-time compile tests cannot compile."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout, result.stdout[-2000:]


def stable_seed(key) -> int:
    """A per-case seed that is the same in every process (hash() of a str is salted per process,
    which made a case's inputs change from run to run), shifted by GENKERNELS_TEST_SEED."""
    import os
    import zlib

    return (zlib.crc32(repr(key).encode()) + int(os.environ.get("GENKERNELS_TEST_SEED", "0"))) % 2**31

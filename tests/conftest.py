"""Shared fixtures. `--triton-interpret` runs Triton kernels in the interpreter on CPU.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, in
pytest_configure, before any test module (and so genkernels' lazy Triton imports) is loaded.
"""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--triton-interpret",
        action="store_true",
        help="run Triton kernels in the Triton interpreter on CPU tensors (small shapes)",
    )


def pytest_configure(config):
    if config.getoption("--triton-interpret"):
        os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    import torch

    # GENKERNELS_TEST_SEED reruns the suite on other random inputs: how the accuracy rule's
    # margins are checked not to depend on one lucky draw
    torch.manual_seed(int(os.environ.get("GENKERNELS_TEST_SEED", "0")))
    yield



@pytest.fixture
def on_triton_device():
    """Tensor factories default to the device Triton kernels run on (CUDA unless interpreting)."""
    import torch

    from tests.helpers import triton_device

    with torch.device(triton_device() or "cpu"):
        yield

"""Model tests run single-threaded: the networks are tiny, so one thread is as fast as two on an
idle machine and avoids oversubscription slowdowns (10x seen) when other jobs share the cores."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

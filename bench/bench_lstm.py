"""pytest-benchmark cases for the LSTM layers (same setups as `genkernels bench --suite lstm`).

Run:  python -m pytest bench/bench_lstm.py --benchmark-group-by=param:hidden
Times one training step (forward over T = 64 steps at batch 32 + backward) of genkernels.nn.LSTM
(plain and layer_norm=True) and torch.nn.LSTM with the same weights, after checking that their
outputs agree.
"""
import pytest
import torch

import genkernels
from genkernels.bench import lstm
from genkernels.nn import LSTM

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("provider", ["torch.nn.LSTM", "genkernels.nn.LSTM", "genkernels.nn.LSTM(layer_norm)"])
@pytest.mark.parametrize("hidden, T, batch", lstm.TRAIN_CASES, ids=[f"h{c[0]}" for c in lstm.TRAIN_CASES])
def test_lstm_train_step(benchmark, provider, hidden, T, batch):
    torch.manual_seed(0)
    x, gy = torch.randn(T, batch, hidden, device=DEVICE), torch.randn(T, batch, hidden, device=DEVICE)
    ours = LSTM(hidden, hidden, layer_norm="layer_norm" in provider).to(DEVICE)
    if provider == "torch.nn.LSTM":
        model = torch.nn.LSTM(hidden, hidden).to(DEVICE)
        model.load_state_dict(ours.state_dict())
        torch.testing.assert_close(model(x)[0], ours(x)[0], rtol=1e-4, atol=1e-5)
    else:
        model = ours
    step = lstm._train_step(model, x, gy)
    benchmark.extra_info.update(provider=provider, hidden=hidden, T=T, batch=batch, device=str(DEVICE),
                                threads=torch.get_num_threads(), torch=torch.__version__,
                                genkernels=genkernels.__version__)
    benchmark(step)

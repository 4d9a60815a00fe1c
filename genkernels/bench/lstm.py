"""`genkernels bench --suite lstm`: LSTM training steps and generation latency.

train       one training step (forward over T steps + backward of a fixed output gradient) of
            genkernels.nn.LSTM vs torch.nn.LSTM (oneDNN / aten on CPU, cuDNN on GPU) with the same
            weights; and the LayerNorm-LSTM (layer_norm=True) fused vs the same recurrence in eager
            PyTorch ops (the reference route, which is what a user writes without a fused cell)
generation  per-step latency at batch 1, no grad, state carried: genkernels.nn.LSTM and
            genkernels.nn.LSTMCell called one step at a time vs torch.nn.LSTM / torch.nn.LSTMCell

Every provider's output is checked against the first one's before it is timed; timings are
interleaved (genkernels.bench.timing.measure_interleaved), so load changes hit all alike.
"""
from __future__ import annotations

import copy

import torch

from genkernels.bench.timing import measure_interleaved

TRAIN_CASES = [(256, 64, 32), (512, 64, 32), (1024, 64, 32)]  # (hidden, T, B); input size = hidden
LN_CASES = [(256, 64, 32), (512, 64, 32)]
GEN_CASES = [256, 512, 1024]  # hidden, batch 1, 2 layers (LSTM) / 1 layer (cell)
TINY_TRAIN, TINY_LN, TINY_GEN = [(8, 3, 2)], [(8, 3, 2)], [8]
TRAIN_COLUMNS = ["case", "provider", "hidden", "T", "batch", "ms", "speedup"]
GEN_COLUMNS = ["case", "provider", "hidden", "layers", "us_per_step", "speedup"]
TIMING = dict(warmup=1, repeat=5, min_time=0.0)


def _train_step(model, x, gy):
    def step():
        for p in model.parameters():
            p.grad = None
        y, _ = model(x)
        y.backward(gy)
        return y
    return step


def _check(name, got, expected, tol):
    err = (got.float() - expected.float()).abs().max().item()
    if err > tol * max(1.0, expected.abs().max().item()):
        raise AssertionError(f"lstm bench: {name} differs from the baseline by {err:.3g}")


def train_rows(device, cases=None, ln_cases=None, timing=None):
    from genkernels import use_backend
    from genkernels.nn import LSTM

    timing = timing or TIMING
    rows = []
    for layer_norm, group in ((False, cases or TRAIN_CASES), (True, ln_cases or LN_CASES)):
        for H, T, B in group:
            torch.manual_seed(0)
            x = torch.randn(T, B, H, device=device)
            gy = torch.randn(T, B, H, device=device)
            ours = LSTM(H, H, layer_norm=layer_norm).to(device)
            if layer_norm:
                base_name, base = "eager LN-LSTM", copy.deepcopy(ours)
                base_step = _train_step(base, x, gy)

                def baseline(step=base_step):
                    with use_backend("torch"):
                        return step()
            else:
                base_name, base = "torch.nn.LSTM", torch.nn.LSTM(H, H).to(device)
                base.load_state_dict(ours.state_dict())
                baseline = _train_step(base, x, gy)
            fast = _train_step(ours, x, gy)
            _check(f"output at hidden {H}", fast(), baseline(), 1e-3)
            times = measure_interleaved({base_name: baseline, "genkernels.nn.LSTM": fast}, device, **timing)
            case = "LayerNorm-LSTM train step" if layer_norm else "LSTM train step"
            for name, seconds in times.items():
                rows.append({"case": case, "provider": name, "hidden": H, "T": T, "batch": B,
                             "ms": seconds * 1e3, "speedup": times[base_name] / seconds})
    return rows


def generation_rows(device, hiddens=None, timing=None, layers=2):
    from genkernels.nn import LSTM, LSTMCell

    timing = timing or TIMING
    rows = []
    for H in hiddens or GEN_CASES:
        torch.manual_seed(0)
        x = torch.randn(1, 1, H, device=device)
        ref = torch.nn.LSTM(H, H, num_layers=layers).to(device).eval()
        ours = LSTM(H, H, num_layers=layers).to(device).eval()
        ours.load_state_dict(ref.state_dict())
        ref_cell = torch.nn.LSTMCell(H, H).to(device)
        cell = LSTMCell(H, H).to(device)
        cell.load_state_dict(ref_cell.state_dict())
        zeros = torch.zeros(layers, 1, H, device=device)
        state = {"ref": (zeros, zeros), "ours": (zeros, zeros), "ref_cell": None, "cell": None}

        def step(model, key):
            def fn():
                with torch.no_grad():
                    y, state[key] = model(x, state[key])
                return y
            return fn

        def cell_step(model, key):
            def fn():
                with torch.no_grad():
                    state[key] = model(x[0], state[key])
                return state[key][0]
            return fn

        fns = {"torch.nn.LSTM": step(ref, "ref"), "genkernels.nn.LSTM": step(ours, "ours"),
               "torch.nn.LSTMCell": cell_step(ref_cell, "ref_cell"), "genkernels.nn.LSTMCell": cell_step(cell, "cell")}
        for _ in range(3):  # the same number of steps from the same state: outputs agree
            outs = {k: f() for k, f in fns.items()}
        _check(f"generation step at hidden {H}", outs["genkernels.nn.LSTM"], outs["torch.nn.LSTM"], 1e-4)
        _check(f"cell step at hidden {H}", outs["genkernels.nn.LSTMCell"], outs["torch.nn.LSTMCell"], 1e-4)
        times = measure_interleaved(fns, device, **{**timing, "min_time": max(timing.get("min_time", 0), 0.02)})
        for name, seconds in times.items():
            base = times["torch.nn.LSTMCell" if "Cell" in name else "torch.nn.LSTM"]
            rows.append({"case": "generation step, batch 1", "provider": name, "hidden": H,
                         "layers": 1 if "Cell" in name else layers, "us_per_step": seconds * 1e6,
                         "speedup": base / seconds})
    return rows


def run_suite(device, tiny: bool = False) -> dict:
    device = torch.device(device)
    if tiny:
        quick = dict(warmup=1, repeat=2, min_time=0.0)
        return {"train": train_rows(device, TINY_TRAIN, TINY_LN, quick),
                "generation": generation_rows(device, TINY_GEN, quick)}
    return {"train": train_rows(device), "generation": generation_rows(device)}

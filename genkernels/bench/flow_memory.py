"""Training memory of a deep flow with and without recompute-by-inverse (FlowSequential(recompute=True)).

The model: a 32-block RealNVP-like stack on 3 x 32 x 32 images, single scale: 16 blocks of
(ActNorm, AffineCoupling with a checkerboard mask, parities alternating) at 3 x 32 x 32, a
Squeeze to 12 x 16 x 16, then 16 blocks of (ActNorm, AffineCoupling with a channel mask, parities
alternating); conv conditioners with `hidden` channels. One training step: forward, loss
-mean(log N(y; 0, I) + logdet), backward.

Memory, per step and mode (stored activations vs recompute):
- saved_peak_MB: the peak of the bytes autograd holds for backward (torch.autograd.graph.
  saved_tensors_hooks, each storage once, parameters and the input batch left out), tracked live
  through forward and backward; saved_after_forward_MB, what is held between forward and
  backward. In recompute mode that is the final output, plus one layer's graph at a time during
  backward. Device independent: the CPU figure. memory_reduction = stored / recompute peak.
- cuda_peak_MB (GPU only): torch.cuda.max_memory_allocated during the step minus what was allocated
  before it (parameters, input, gradients of the previous step).
Time: median seconds per step, the two modes' steps interleaved (load from other processes hits
both alike), after ActNorm's data-dependent initialisation and a warm-up step. Before timing, the
two modes' gradients are checked to agree.
"""
from __future__ import annotations

import copy
import math
import time

import torch

BLOCKS = 32
IMAGE = (3, 32, 32)
# the suite's sizes (batch None: 4 on CPU, 64 on a GPU); TINY for the tests
CONFIG = dict(blocks=BLOCKS, image=IMAGE, hidden=64, batch=None, repeat=5)
TINY = dict(blocks=4, image=(2, 8, 8), hidden=8, batch=2, repeat=1)


class _Held:
    """What a saved-tensor pack hook stores: the tensor, counted by its meter while alive."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor, meter):
        self.tensor, self.meter, self.key = tensor, meter, None
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in meter.excluded or storage.nbytes() == 0:
            return
        self.key = key
        entry = meter.holders.setdefault(key, [0, storage.nbytes()])
        if entry[0] == 0:
            meter.live += entry[1]
            meter.peak = max(meter.peak, meter.live)
        entry[0] += 1

    def __del__(self):
        if self.key is None:
            return
        meter = self.meter
        entry = meter.holders[self.key]
        entry[0] -= 1
        if entry[0] == 0:
            meter.live -= entry[1]
            del meter.holders[self.key]


class SavedTensorMeter:
    """Live and peak bytes of the tensors autograd saves for backward, inside `with meter:`.

    Each storage counts once however many graph nodes save it; a storage stops counting when the
    last node holding it is freed (backward frees them as it goes). Tensors sharing storage with
    `exclude` (parameters, the input batch) are not counted.
    """

    def __init__(self, exclude=()):
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self.live = self.peak = 0
        self.holders: dict[int, list] = {}  # storage pointer -> [holders alive, nbytes]

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: _Held(t, self), lambda held: held.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def realnvp_stack(blocks: int = BLOCKS, image=IMAGE, hidden: int = 64, recompute: bool = False):
    """The benchmark flow (see the module docstring): FlowSequential of 2 * blocks + 1 layers."""
    from genkernels.nn import ActNorm, AffineCoupling, FlowSequential, Squeeze

    channels = image[0]
    layers = []
    for i in range(blocks // 2):
        layers += [ActNorm(channels), AffineCoupling(channels, hidden, mask="checkerboard", parity=i % 2)]
    layers.append(Squeeze())
    channels *= 4
    for i in range(blocks - blocks // 2):
        layers += [ActNorm(channels), AffineCoupling(channels, hidden, mask="channel", parity=i % 2)]
    return FlowSequential(*layers, recompute=recompute)


def negative_log_likelihood(flow, x):
    """Mean NLL in nats per sample under a standard normal base."""
    y, logdet = flow(x)
    log_base = -0.5 * (y.square() + math.log(2 * math.pi)).flatten(1).sum(1)
    return -(log_base + logdet).mean()


def train_step(flow, x):
    flow.zero_grad(set_to_none=True)
    loss = negative_log_likelihood(flow, x)
    loss.backward()
    return loss


def _perturb_conditioner_heads(flow, std=0.01, seed=0):
    """Give the zero-initialised heads small weights, so the stack is not the identity and the
    backward does real work (a trained flow's state)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(std * torch.randn(p.shape, generator=g).to(p))


def measure_memory(flow, x) -> dict:
    """Saved-tensor bytes (and the CUDA peak on a GPU) of one training step."""
    device = x.device
    flow.zero_grad(set_to_none=True)
    with SavedTensorMeter(exclude=list(flow.parameters()) + [x]) as meter:
        loss = negative_log_likelihood(flow, x)
        after_forward = meter.live  # what is held from forward to backward
        loss.backward()
        del loss
    row = {"saved_after_forward_MB": after_forward / 2**20, "saved_peak_MB": meter.peak / 2**20}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(flow, x)
        torch.cuda.synchronize(device)
        row["cuda_peak_MB"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return row


def step_seconds(flows, x, repeat: int) -> list[float]:
    """Median seconds per training step of each flow, the flows' steps interleaved so that load
    from other processes hits them alike."""
    times = [[] for _ in flows]
    for _ in range(repeat):
        for i, flow in enumerate(flows):
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            train_step(flow, x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times[i].append(time.perf_counter() - start)
    return [sorted(t)[len(t) // 2] for t in times]


def gradient_agreement(stored, recomputing, x) -> float:
    """|g_recompute - g_stored| / |g_stored| over all parameter gradients as one vector, one step
    each. A norm, not an element maximum: a ReLU whose input lies within rounding of 0 may switch
    sides between the two paths and move single elements by O(1)."""
    train_step(stored, x)
    train_step(recomputing, x)
    a = torch.cat([p.grad.flatten() for p in stored.parameters()])
    b = torch.cat([p.grad.flatten() for p in recomputing.parameters()])
    return ((a - b).norm() / a.norm()).item()


def run_suite(device, batch: int | None = None, blocks: int | None = None, image=None, hidden: int | None = None,
              repeat: int | None = None, dtype=torch.float32) -> list[dict]:
    """Rows for the stored and recompute modes, with the ratios on the recompute row (the table
    of `genkernels bench --suite flow_memory`); arguments left None come from CONFIG."""
    device = torch.device(device)
    batch = batch or CONFIG["batch"] or (64 if device.type == "cuda" else 4)
    blocks, image = blocks or CONFIG["blocks"], tuple(image or CONFIG["image"])
    hidden, repeat = hidden or CONFIG["hidden"], repeat or CONFIG["repeat"]
    torch.manual_seed(0)
    stored = realnvp_stack(blocks, image, hidden).to(device, dtype)
    x = torch.randn(batch, *image, device=device, dtype=dtype)
    stored.initialize(x)  # ActNorm's data-dependent initialisation, before either mode
    _perturb_conditioner_heads(stored)
    recomputing = copy.deepcopy(stored)
    recomputing.recompute = True
    agreement = gradient_agreement(stored, recomputing, x)
    if not agreement < 1e-3:  # correctness before timing: the modes must train alike
        raise AssertionError(f"recompute and stored parameter gradients differ by {agreement:.3g} of their norm")
    rows = []
    for mode, flow in (("stored", stored), ("recompute", recomputing)):
        train_step(flow, x)  # warm-up
        rows.append({"mode": mode, "blocks": blocks, "image": "x".join(map(str, image)), "batch": batch,
                     "hidden": hidden, "dtype": str(dtype).replace("torch.", ""), **measure_memory(flow, x)})
    for row, seconds in zip(rows, step_seconds((stored, recomputing), x, repeat)):
        row["step_s"] = seconds
    base, rec = rows
    rec["memory_reduction"] = base["saved_peak_MB"] / rec["saved_peak_MB"]
    if "cuda_peak_MB" in base:
        rec["cuda_memory_reduction"] = base["cuda_peak_MB"] / rec["cuda_peak_MB"]
    rec["time_ratio"] = rec["step_s"] / base["step_s"]
    rec["relative_grad_difference"] = agreement
    return rows


def memory_by_depth(device, depths=(8, 16, 32, 64), batch: int = 4, image=IMAGE, hidden: int = 64) -> list[dict]:
    """Saved-tensor peak of one training step per depth and mode: stored grows linearly, recompute
    stays flat."""
    device = torch.device(device)
    x = torch.randn(batch, *image, device=device, generator=torch.Generator(device).manual_seed(0))
    rows = []
    for blocks in depths:
        row = {"blocks": blocks, "batch": batch, "image": "x".join(map(str, image))}
        for mode, recompute in (("stored", False), ("recompute", True)):
            torch.manual_seed(0)
            flow = realnvp_stack(blocks, image, hidden, recompute=recompute).to(device)
            flow.initialize(x)
            row[f"{mode}_saved_peak_MB"] = measure_memory(flow, x)["saved_peak_MB"]
        rows.append(row)
    return rows


COLUMNS = ["mode", "blocks", "image", "batch", "saved_after_forward_MB", "saved_peak_MB", "cuda_peak_MB", "step_s",
           "memory_reduction", "cuda_memory_reduction", "time_ratio", "relative_grad_difference"]


def main(argv=None) -> int:
    import argparse
    import json
    import os
    import platform

    from genkernels.bench import format_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 4 on CPU, 64 on GPU)")
    parser.add_argument("--blocks", type=int, default=None, help=f"coupling blocks (default {BLOCKS})")
    parser.add_argument("--hidden", type=int, default=None, help="conditioner channels (default 64)")
    parser.add_argument("--repeat", type=int, default=None, help="timed steps per mode (default 5)")
    parser.add_argument("--depths", type=int, nargs="*", default=[8, 16, 32, 64],
                        help="block counts for the memory-by-depth table (none: skip it)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_suite(args.device, args.batch, args.blocks, None, args.hidden, args.repeat)
    print(format_table(rows, [c for c in COLUMNS if any(c in r for r in rows)]))
    depth_rows = (memory_by_depth(args.device, args.depths, rows[0]["batch"], hidden=rows[0]["hidden"])
                  if args.depths else [])
    if depth_rows:
        print("\nsaved-tensor peak by depth (MB):\n" + format_table(depth_rows, list(depth_rows[0])))
    if args.json:
        environment = {"device": str(args.device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "backend": os.environ.get("GENKERNELS_BACKEND") or "default",
                       "load_average_1min_at_end": os.getloadavg()[0]}
        if torch.device(args.device).type == "cuda":
            environment["gpu"] = torch.cuda.get_device_name(args.device)
        with open(args.json, "w") as file:
            json.dump({"environment": environment, "results": rows, "memory_by_depth": depth_rows}, file, indent=2)
            file.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

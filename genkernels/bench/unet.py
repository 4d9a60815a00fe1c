"""UNet-level speed of the diffusion models (genkernels/models/unet.py, genkernels/models/diffusion.py).

Three tables, each measured in one run with untrained weights (timing does not depend on them):

train    training steps/s of the digits model (`genkernels train diffusion`: class-conditional
         UNet, base 32, 8x8, batch 64; loss + backward + AdamW step): eager with the reference ops
         (genkernels.use_backend("torch")), eager with the fused ops (the default), and
         torch.compile of the loss with the fused ops (what `--compile` runs).
step     one sampling step of a UNet sized for 64x64 RGB images (base 64, mults (1, 2, 2, 4),
         attention at 16 and 8): the denoiser forward + the fused DDIM step, for eager reference
         ops, fused ops, and torch.compile of the reference; plus, from torch.profiler, the share of
         the step's time spent outside matmul / convolution / attention ops (CPU: of the wall time;
         CUDA: of the kernel time): the memory-bound remainder (norms, activations, adds, copies,
         and on the CPU the Python overhead) that fusion attacks. The providers' outputs
         must agree (rtol = atol = 1e-3) before anything is timed.
sampler  images/s of whole sampling runs with classifier-free guidance (conditional and
         unconditional rows in one batched forward) on the digits model: 50-step DDIM and 20-step
         DPM-Solver++(2M), with the fused ops and with the reference ops throughout (model and
         steps); the per-step fused-vs-unfused sampler loop alone is in the `sampler` suite.
"""
from __future__ import annotations

import contextlib
import time

import torch

import genkernels

# UNet sized for 64x64 RGB images: 64 -> 32 -> 16 -> 8, attention at 16x16 and 8x8
UNET64 = dict(in_channels=3, image_size=64, base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=1,
              attention_resolutions=(16, 8), num_heads=4)
TINY_UNET = dict(in_channels=3, image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,), num_heads=2)
DIGITS = dict(conditioning="class", num_classes=10)  # the CLI's digits model (DiffusionConfig defaults)
TINY_DIGITS = dict(conditioning="class", num_classes=10, base_channels=8, num_heads=2)

# profiler names of matmul-, convolution- and attention-shaped work (aten ops on CPU, kernels on CUDA)
DENSE_MARKERS = ("conv", "mm", "gemm", "matmul", "attn", "attention", "flash", "xmma", "cutlass", "cudnn",
                 "linear")


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _backend(name):
    return genkernels.use_backend(name) if name is not None else contextlib.nullcontext()


def _seconds(fn, device, warmup: int, repeat: int) -> float:
    """Median seconds of `repeat` calls after `warmup` (compilation happens there)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _interleaved_seconds(fns: dict, device, warmup: int, repeat: int) -> dict:
    """{name: median seconds}: after `warmup` calls each, `repeat` rounds that time one call of every
    fn in turn, so a change in the load of a shared machine hits all providers alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def outside_dense_share(fn, device) -> tuple[float, float]:
    """(share of the step's time outside matmul/conv/attention ops, the step's profiled ms) of one call.

    CUDA: kernel time (CUPTI sees every kernel, the extension's too), dense kernels vs all kernels.
    CPU: dense ops' self time vs the call's wall time. Not the sum of the events' self times: the
    C++ extension's kernels are called from Python, not through the dispatcher, so they record no
    profiler event of their own and would drop out of the total; wall time counts them, plus the
    Python overhead between ops (which fusion and compilation also remove).
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        wall_us = (time.perf_counter() - start) * 1e6
    total = dense = 0.0
    for event in prof.key_averages():
        if device.type == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue  # kernel time; the CPU-side launch events are not the step's device time
            self_time = event.self_device_time_total
            total += self_time
        else:
            self_time = event.self_cpu_time_total
        if any(marker in event.key.lower() for marker in DENSE_MARKERS):
            dense += self_time
    total = total if device.type == "cuda" else wall_us
    return (max(0.0, 1.0 - dense / total) if total else float("nan")), total / 1e3


def _digits_batch(batch: int, device):
    from genkernels.data.digits import load_digits_tensors

    images, labels = load_digits_tensors("train", "float")
    index = torch.arange(batch) % images.shape[0]
    return images[index].to(device), labels[index].to(device)


def bench_train(device, with_compile=True, tiny=False, batch: int = 64, repeat: int = 5) -> list[dict]:
    from genkernels.models.diffusion import Diffusion, DiffusionConfig

    rows = []
    providers = [("eager, reference ops", "torch", False), ("eager, fused ops", None, False)]
    if with_compile:
        providers.append(("torch.compile, fused ops (--compile)", None, True))
    x, y = _digits_batch(batch, device)
    steps, first, parameters = {}, {}, 0
    for name, backend, compiled in providers:
        torch.manual_seed(0)
        model = Diffusion(DiffusionConfig(**(TINY_DIGITS if tiny else DIGITS))).to(device).train()
        parameters = sum(p.numel() for p in model.parameters())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = torch.compile(model.loss) if compiled else model.loss

        def step(backend=backend, optimizer=optimizer, loss_fn=loss_fn):
            with _backend(backend):
                optimizer.zero_grad(set_to_none=True)
                loss_fn((x, y))["loss"].backward()
                optimizer.step()

        start = time.perf_counter()
        step()  # the first call compiles
        first[name], steps[name] = time.perf_counter() - start, step
    seconds = _interleaved_seconds(steps, device, warmup=2, repeat=repeat)
    for name in steps:
        rows.append({"case": "digits UNet training step", "provider": name, "batch": batch,
                     "parameters": parameters, "ms": seconds[name] * 1e3,
                     "steps_per_s": 1.0 / seconds[name], "first_call_s": first[name]})
    eager = rows[1]["ms"]
    for r in rows:
        r["speedup_vs_fused_eager"] = eager / r["ms"]
    return rows


def bench_step(device, with_compile=True, tiny=False, batch: int | None = None, repeat: int = 3) -> list[dict]:
    from genkernels.diffusion import ddim_step, make_schedule
    from genkernels.models.unet import UNet, UNetConfig

    device = torch.device(device)
    batch = batch or (4 if device.type == "cpu" else 32)
    config = UNetConfig(**(TINY_UNET if tiny else UNET64))
    torch.manual_seed(0)
    model = UNet(config).to(device).eval()
    with torch.no_grad():  # the zero-initialised output layers would make every provider's output 0
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.02)
    schedule = make_schedule("cosine", 1000)
    size = config.image_size
    x = torch.randn(batch, config.in_channels, size, size, device=device)
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)

    def sampling_step():
        return ddim_step(model(x, t), x, t, 480, schedule, prediction="v", offset=1)

    providers = [("eager, reference ops", "torch", False), ("eager, fused ops", None, False)]
    if with_compile:
        providers.append(("torch.compile, reference ops", "torch", True))
    rows, runs, first, outputs = [], {}, {}, {}
    with torch.no_grad():
        for name, backend, compiled in providers:
            fn = torch.compile(sampling_step) if compiled else sampling_step

            def run(backend=backend, fn=fn):
                with _backend(backend):
                    return fn()

            start = time.perf_counter()
            outputs[name] = run()
            first[name], runs[name] = time.perf_counter() - start, run
        reference = outputs[providers[0][0]]
        for name, out in outputs.items():  # every provider computes the same step before it is timed
            if not torch.allclose(out.float(), reference.float(), rtol=1e-3, atol=1e-3):
                error = (out.float() - reference.float()).abs().max().item()
                raise AssertionError(f"UNet sampling step: {name} differs from the reference ops (max |diff| "
                                     f"{error:.3g})")
        seconds = _interleaved_seconds(runs, device, warmup=1, repeat=repeat)
        for name, backend, compiled in providers:
            row = {"case": f"{size}x{size} UNet sampling step", "provider": name, "batch": batch,
                   "parameters": sum(p.numel() for p in model.parameters()), "ms": seconds[name] * 1e3,
                   "first_call_s": first[name]}
            if not compiled:
                row["outside_matmul_conv_attn"] = outside_dense_share(runs[name], device)[0]
            rows.append(row)
    eager = rows[0]["ms"]
    for r in rows:
        r["speedup_vs_eager"] = eager / r["ms"]
    return rows


def bench_sampler(device, tiny=False, batch: int | None = None, guidance: float = 3.0) -> list[dict]:
    from genkernels.diffusion import sampling
    from genkernels.models.diffusion import Diffusion, DiffusionConfig

    device = torch.device(device)
    batch = batch or (2 if tiny else 32 if device.type == "cpu" else 256)
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(**(TINY_DIGITS if tiny else DIGITS))).to(device).eval()
    available = getattr(sampling, "SAMPLERS", {})
    rows = []
    for sampler, steps in (("ddim", 50), ("dpm_solver", 20)):
        if tiny:
            steps = 2
        if sampler not in available:
            rows.append({"case": f"{sampler} {steps} steps, guidance {guidance:g}", "provider": "n/a",
                         "note": "sampler not in genkernels.diffusion.sampling.SAMPLERS"})
            continue
        for name, backend in (("reference ops", "torch"), ("fused ops", None)):
            def run():
                with _backend(backend):
                    return model.sample(batch, steps=steps, sampler=sampler, guidance_scale=guidance, seed=0)

            seconds = _seconds(run, device, warmup=1, repeat=1 if device.type == "cpu" else 3)
            rows.append({"case": f"{sampler} {steps} steps, guidance {guidance:g}", "provider": name,
                         "batch": batch, "forward_rows_per_step": 2 * batch, "ms": seconds * 1e3,
                         "images_per_s": batch / seconds})
        rows[-1]["speedup_vs_reference"] = rows[-2]["ms"] / rows[-1]["ms"]
    return rows


def run_suite(device, with_compile=True, tiny=False) -> dict[str, list[dict]]:
    """{"train": rows, "step": rows, "sampler": rows}; tiny: toy sizes for the tests."""
    return {"train": bench_train(device, with_compile, tiny, batch=8 if tiny else 64, repeat=2 if tiny else 5),
            "step": bench_step(device, with_compile, tiny, batch=2 if tiny else None, repeat=1 if tiny else 5),
            "sampler": bench_sampler(device, tiny)}


TRAIN_COLUMNS = ["case", "provider", "batch", "ms", "steps_per_s", "speedup_vs_fused_eager", "first_call_s"]
STEP_COLUMNS = ["case", "provider", "batch", "ms", "speedup_vs_eager", "outside_matmul_conv_attn", "first_call_s"]
SAMPLER_COLUMNS = ["case", "provider", "batch", "ms", "images_per_s", "speedup_vs_reference", "note"]

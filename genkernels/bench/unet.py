"""UNet-level speed of the diffusion models (genkernels/models/unet.py, genkernels/models/diffusion.py).

Three tables, each measured in one run with untrained weights (timing does not depend on them):

train    training steps/s of the digits model (`genkernels train diffusion`: class-conditional
         UNet, base 32, 8x8, batch 64; loss + backward + AdamW step): eager with the reference ops
         (genkernels.use_backend("torch")), eager with the fused ops (the default), and
         torch.compile of the loss with the fused ops (what `--compile` runs).
step     one sampling step of a UNet sized for 64x64 RGB images (base 64, mults (1, 2, 2, 4),
         attention at 16 and 8): the denoiser forward + the fused DDIM step, for eager reference
         ops, fused ops, and torch.compile of the reference; plus, from torch.profiler, the share of
         the step's self time spent outside matmul / convolution / attention ops: the memory-bound
         remainder (norms, activations, adds, copies) that fusion attacks.
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


def outside_dense_share(fn, device) -> tuple[float, float]:
    """(share of self time outside matmul/conv/attention ops, profiled ms) of one call of fn."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    total = dense = 0.0
    for event in prof.key_averages():
        if device.type == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue  # kernel time; the CPU-side launch events are not the step's device time
            self_time = event.self_device_time_total
        else:
            self_time = event.self_cpu_time_total
        total += self_time
        if any(marker in event.key.lower() for marker in DENSE_MARKERS):
            dense += self_time
    return (1.0 - dense / total if total else float("nan")), total / 1e3


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
    for name, backend, compiled in providers:
        torch.manual_seed(0)
        model = Diffusion(DiffusionConfig(**(TINY_DIGITS if tiny else DIGITS))).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = torch.compile(model.loss) if compiled else model.loss

        def step():
            with _backend(backend):
                optimizer.zero_grad(set_to_none=True)
                loss_fn((x, y))["loss"].backward()
                optimizer.step()

        start = time.perf_counter()
        step()  # the first call compiles
        first = time.perf_counter() - start
        seconds = _seconds(step, device, warmup=2, repeat=repeat)
        rows.append({"case": "digits UNet training step", "provider": name, "batch": batch,
                     "parameters": sum(p.numel() for p in model.parameters()), "ms": seconds * 1e3,
                     "steps_per_s": 1.0 / seconds, "first_call_s": first})
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
    schedule = make_schedule("cosine", 1000)
    size = config.image_size
    x = torch.randn(batch, config.in_channels, size, size, device=device)
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)

    def sampling_step():
        return ddim_step(model(x, t), x, t, 480, schedule, prediction="v", offset=1)

    providers = [("eager, reference ops", "torch", False), ("eager, fused ops", None, False)]
    if with_compile:
        providers.append(("torch.compile, reference ops", "torch", True))
    rows = []
    with torch.no_grad():
        for name, backend, compiled in providers:
            fn = torch.compile(sampling_step) if compiled else sampling_step

            def run():
                with _backend(backend):
                    return fn()

            start = time.perf_counter()
            run()
            first = time.perf_counter() - start
            seconds = _seconds(run, device, warmup=1, repeat=repeat)
            row = {"case": f"{size}x{size} UNet sampling step", "provider": name, "batch": batch,
                   "parameters": sum(p.numel() for p in model.parameters()), "ms": seconds * 1e3,
                   "first_call_s": first}
            if not compiled:
                share, _ = outside_dense_share(run, device)
                row["outside_matmul_conv_attn"] = share
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
            "step": bench_step(device, with_compile, tiny, batch=2 if tiny else None, repeat=1 if tiny else 3),
            "sampler": bench_sampler(device, tiny)}


TRAIN_COLUMNS = ["case", "provider", "batch", "ms", "steps_per_s", "speedup_vs_fused_eager", "first_call_s"]
STEP_COLUMNS = ["case", "provider", "batch", "ms", "speedup_vs_eager", "outside_matmul_conv_attn", "first_call_s"]
SAMPLER_COLUMNS = ["case", "provider", "batch", "ms", "images_per_s", "speedup_vs_reference", "note"]

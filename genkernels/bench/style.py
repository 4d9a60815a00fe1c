"""Neural style transfer benchmarks (`genkernels bench --suite style`).

gram: the Gram-matrix style loss, forward + backward, for feature shapes of a stylisation run:
  eager     gram_style_loss_ref (bmm -> divide -> subtract -> square -> mean, autograd backward:
            two bmms and an add for dL/dF)
  compile   torch.compile of that reference (first-call compilation excluded)
  fused     genkernels.ops.gram_style_loss (one baddbmm each way, saves only F and G - T)
  with the bytes each keeps for the backward (saved_MiB, by saved-tensor hooks: eager and fused)
  and the peak memory of a forward + backward above the inputs, the gradient included (peak_MiB:
  CUDA's peak allocated bytes, or on Linux CPUs the growth of the process's peak resident set).
  Autograd's bmm backward forms dG F and dG^T F apart and adds them: three F-sized tensors at its
  peak where the fused backward writes one.
stylize: wall time of Gatys optimisation (Adam, random-filter extractor) per 100 steps on one
  size x size image (measured over `steps` steps after 2 warm-up steps), and the fast network
  (TransformerNet, 32 channels, 5 residual blocks) per image: inference at batch 1 and a training
  step at batch 4.
"""
from __future__ import annotations

import time

import torch

from genkernels.bench.timing import measure_interleaved, synchronize

GRAM_SHAPES = [(1, 64, 256, 256), (4, 128, 64, 64), (1, 256, 32, 32)]  # (B, C, H, W): relu1_1 .. relu4_1 at 256 px
GRAM_COLUMNS = ["op", "provider", "dtype", "shape", "ms", "saved_MiB", "peak_MiB", "speedup_vs_eager"]
STYLIZE_COLUMNS = ["case", "size", "batch", "ms_per_image_step", "s_per_100_steps", "ms_per_image"]


def _gram_inputs(shape, dtype, device):
    from genkernels.ops.gram_style_loss import gram_matrix

    g = torch.Generator().manual_seed(0)
    features = torch.randn(shape, generator=g).relu().to(device, dtype).requires_grad_(True)
    target = gram_matrix(torch.randn(1, *shape[1:], generator=g).relu().to(device, dtype))[0].detach()
    return features, target


def _gram_functions(features, target, with_compile):
    from genkernels.ops.gram_style_loss import gram_style_loss, gram_style_loss_ref

    fns = {"eager": gram_style_loss_ref, "fused": gram_style_loss}
    if with_compile:
        fns["compile"] = torch.compile(gram_style_loss_ref)

    def step(fn):
        def run():
            features.grad = None
            fn(features, target).backward()
        return run
    return fns, {name: step(fn) for name, fn in fns.items()}


def _saved_bytes(fn, features, target) -> int:
    """Bytes of the distinct tensors autograd keeps between forward and backward."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(features, target)
    loss.backward()
    features.grad = None
    return sum(seen.values())


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def _peak_bytes(run, device) -> int | None:
    """Peak memory of one call above what was in use before it: CUDA's peak allocated bytes, or on
    Linux the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) above the
    resident set before the call; None where neither exists."""
    if device.type != "cuda":
        try:
            import ctypes

            # hand freed heap pages back first: glibc keeps them resident, and a call that reuses
            # them would not raise the resident set at all
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            base = _proc_status("VmRSS:")
            run()
            return _proc_status("VmHWM:") - base
        except (OSError, AttributeError):
            return None
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def gram_rows(device, dtype=torch.float32, with_compile=True, shapes=GRAM_SHAPES) -> list[dict]:
    rows = []
    for shape in shapes:
        features, target = _gram_inputs(shape, dtype, device)
        fns, runs = _gram_functions(features, target, with_compile)
        reference = fns["eager"](features.detach().double(), target.double())
        fused = fns["fused"](features, target)
        torch.testing.assert_close(fused.double(), reference, rtol=1e-2, atol=1e-6)  # correct before timed
        seconds = measure_interleaved(runs, device, warmup=3, repeat=7)
        for name in runs:
            saved = _saved_bytes(fns[name], features, target) if name != "compile" else None
            peak = _peak_bytes(runs[name], device)
            rows.append({"op": "gram_style_loss fwd+bwd", "provider": name, "dtype": str(dtype).replace("torch.", ""),
                         "shape": "x".join(map(str, shape)), "ms": seconds[name] * 1e3,
                         "saved_MiB": saved / 2 ** 20 if saved is not None else "",
                         "peak_MiB": peak / 2 ** 20 if peak is not None else "",
                         "speedup_vs_eager": seconds["eager"] / seconds[name]})
    return rows


def stylize_rows(device, size=256, steps=10) -> list[dict]:
    from genkernels.models.style_transfer import StyleTransfer, StyleTransferConfig, sample_photos, stylize

    photos = sample_photos(size)
    content, style = photos["china"], photos["flower"]  # (1, 3, ~0.67 size, size)
    content = torch.nn.functional.interpolate(content, size=(size, size), mode="bilinear", align_corners=False)
    stylize(content, style, steps=2, size=None, device=device)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    stylize(content, style, steps=steps, size=None, device=device)
    synchronize(device)
    per_step = (time.perf_counter() - start) / steps
    rows = [{"case": "gatys (adam, random-filter extractor)", "size": f"{size}x{size}", "batch": 1,
             "ms_per_image_step": per_step * 1e3, "s_per_100_steps": per_step * 100}]

    torch.manual_seed(0)
    model = StyleTransfer(StyleTransferConfig(image_shape=(3, size, size)), load_style=False).to(device)
    model.set_style(style)
    one = content.to(device)
    batch = one.expand(4, -1, -1, -1).contiguous()
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-3)

    def train_step():
        opt.zero_grad(set_to_none=True)
        model.loss(batch)["loss"].backward()
        opt.step()

    seconds = measure_interleaved({"infer": lambda: model.stylize_batch(one), "train": train_step}, device,
                                  warmup=2, repeat=3, min_time=0.0)
    rows.append({"case": "fast network inference", "size": f"{size}x{size}", "batch": 1,
                 "ms_per_image": seconds["infer"] * 1e3})
    rows.append({"case": "fast network training step", "size": f"{size}x{size}", "batch": 4,
                 "ms_per_image": seconds["train"] * 1e3 / 4})
    return rows


def run_suite(device, with_compile=True, size=256, steps=10, dtypes=None) -> dict:
    device = torch.device(device)
    dtypes = dtypes or ([torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32])
    gram = [row for dtype in dtypes for row in gram_rows(device, dtype, with_compile)]
    return {"gram": gram, "stylize": stylize_rows(device, size, steps)}

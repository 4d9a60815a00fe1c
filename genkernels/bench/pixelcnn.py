"""PixelCNN sampling speed: windowed (the network over the R + 1 rows that reach the current row)
against naive (the whole image for every pixel), images of 32x32 and 32x32x3
(genkernels/models/pixelcnn.py). The RGB model has colour groups (R -> G -> B inside a pixel), so
each pixel takes three network passes, one per colour, for both samplers.

Per model, in one run: after a warm-up forward over every input height the samplers use (first
calls: Triton compiles on a GPU), each sampler draws the same batch from the same seed (median of
`repeat` timed calls); the two samplers' images must be equal; then images/s of each and the ratio.
The model is small and untrained (timing does not depend on the weights), in eval mode.
"""
from __future__ import annotations

import time

import torch

from genkernels.models.pixelcnn import PixelCNN, PixelCNNConfig

# (name, config fields): 32x32 single-channel and RGB images, 17 levels
MODELS = (
    ("5 layers, 32 ch, 3x3 (first 5x5)", dict(image_shape=(1, 32, 32), channels=32, num_layers=5,
                                              kernel_size=3, first_kernel_size=5, dropout=0.0)),
    ("RGB, colour groups, 5 layers, 33 ch", dict(image_shape=(3, 32, 32), channels=33, num_layers=5,
                                                 kernel_size=3, first_kernel_size=5, head_channels=66,
                                                 dropout=0.0)),
)
TINY_MODELS = (("tiny 8x8", dict(image_shape=(1, 8, 8), channels=4, num_layers=2, head_channels=8,
                                 dropout=0.0)),)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(fields: dict, batch: int = 4, repeat: int = 1, device="cpu") -> dict:
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(**fields)).to(device).eval()
    h, w = model.config.image_shape[1:]
    with torch.no_grad():  # warm-up: the bands of 1 .. R + 1 rows and the whole image
        for rows in sorted({*range(1, min(model.receptive_rows + 1, h) + 1), h}):
            model(torch.zeros(batch, model.config.image_shape[0], rows, w, dtype=torch.long, device=device))
    seconds, images = {}, {}
    for windowed in (True, False):
        times = []
        for _ in range(repeat):
            _sync(device)
            start = time.perf_counter()
            images[windowed] = model.sample(batch, seed=0, windowed=windowed)
            _sync(device)
            times.append(time.perf_counter() - start)
        seconds[windowed] = sorted(times)[len(times) // 2]
    if not torch.equal(images[True], images[False]):
        raise AssertionError("windowed and naive PixelCNN sampling disagree")
    return {"image_shape": "x".join(map(str, model.config.image_shape)), "batch": batch,
            "receptive_rows": model.receptive_rows,
            "parameters": sum(p.numel() for p in model.parameters()),
            "windowed_images_per_s": batch / seconds[True], "naive_images_per_s": batch / seconds[False],
            "windowed_pixels_per_s": batch * h * w / seconds[True],
            "speedup": seconds[False] / seconds[True],
            "band_fraction": (model.receptive_rows + 1) / h}


def run_suite(device, models=None, batch: int = 4, repeat: int = 1) -> list[dict]:
    """One row per model ((name, config fields) pairs, default MODELS)."""
    rows = []
    for name, fields in MODELS if models is None else models:
        rows.append({"model": name, **bench_model(fields, batch, repeat, device)})
    return rows

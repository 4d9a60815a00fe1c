"""pytest-benchmark cases for neural style transfer (same setups as `genkernels bench --suite style`).

Run:  python -m pytest bench/bench_style.py --benchmark-group-by=param:shape
Times the Gram-matrix style loss, forward + backward, of the autograd reference, its torch.compile
and the fused op (genkernels.ops.gram_style_loss) at stylisation feature shapes, after checking
the fused loss against the float64 reference; and one Gatys optimisation step on a 256x256 image.
"""
import pytest
import torch

import genkernels
from genkernels.bench import style

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("provider", ["eager", "compile", "fused"])
@pytest.mark.parametrize("shape", style.GRAM_SHAPES, ids=["x".join(map(str, s)) for s in style.GRAM_SHAPES])
def test_gram_style_loss(benchmark, provider, shape):
    features, target = style._gram_inputs(shape, torch.float32, DEVICE)
    fns, runs = style._gram_functions(features, target, with_compile=provider == "compile")
    torch.testing.assert_close(fns["fused"](features, target).double(),
                               fns["eager"](features.detach().double(), target.double()), rtol=1e-2, atol=1e-6)
    runs[provider]()  # compiles outside the timing
    benchmark.extra_info.update(provider=provider, shape=list(shape), device=str(DEVICE),
                                threads=torch.get_num_threads(), torch=torch.__version__,
                                genkernels=genkernels.__version__)
    benchmark(runs[provider])


def test_gatys_step_256(benchmark):
    from genkernels.models.style_transfer import sample_photos, stylize

    photos = sample_photos(256)
    benchmark.extra_info.update(device=str(DEVICE), threads=torch.get_num_threads(), size=256)
    benchmark.pedantic(lambda: stylize(photos["china"], photos["flower"], steps=1, size=None, device=DEVICE),
                       rounds=3, warmup_rounds=1)

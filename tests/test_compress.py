"""genkernels.compress: the arithmetic coder round-trips losslessly (random symbols, skewed and
near-zero probabilities, adaptive tables) and stays within its stated bound of the ideal length
-sum log2 p; VQ-VAE files round-trip their code maps exactly (chunked) within the bound of the
prior's NLL; the report runs; errors."""
import math

import numpy as np
import pytest
import torch

from genkernels.compress import (code_length_bound, compress_codes, compress_images, compression_report, decode,
                                 decompress, decompress_codes, encode, quantize_probabilities)
from genkernels.models.vqvae import VQVAE, VQVAEConfig


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tables(rng, n, k, scale):
    logits = rng.normal(size=(n, k)) * scale
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k, scale", [(2, 1.0), (17, 3.0), (64, 6.0), (300, 2.0)])
def test_round_trip_and_length_bound_on_random_symbols(k, scale):
    rng = np.random.default_rng(k)
    n = 1500
    p = _tables(rng, n, k, scale)
    symbols = np.array([rng.choice(k, p=row) for row in p])
    data = encode(symbols, p)
    assert np.array_equal(decode(data, p), symbols)
    ideal = -np.log2(p[np.arange(n), symbols]).sum()
    bits = 8 * len(data)
    # the stated bound: ideal + n (log2(T / (T - K)) + 1e-4) + 9, T = 2^16
    bound = ideal + n * (math.log2(2**16 / (2**16 - k)) + 1e-4) + 9
    assert bits <= bound and math.isclose(code_length_bound(p, symbols), bound)
    assert bits >= ideal - 0.01 * n  # no free lunch: close to the ideal from below too


def test_unlikely_symbols_still_round_trip():
    rng = np.random.default_rng(1)
    n, k = 400, 50
    p = np.full((n, k), 1e-12)
    p[:, 0] = 1.0  # symbol 0 almost sure; code the others anyway
    symbols = rng.integers(0, k, n)
    data = encode(symbols, p)
    assert np.array_equal(decode(data, p), symbols)
    assert 8 * len(data) <= code_length_bound(p, symbols)
    # frequencies: every symbol >= 1, totals <= T
    cum = quantize_probabilities(p)
    assert (np.diff(cum, axis=1) >= 1).all() and (cum[:, -1] <= 2**16).all()


def test_adaptive_tables_through_a_callable():
    """An order-1 model: the table of symbol i depends on symbol i - 1 (what autoregressive
    decoding needs)."""
    rng = np.random.default_rng(2)
    k = 5
    transition = _tables(rng, k, k, 2.0)
    symbols = [0]
    for _ in range(299):
        symbols.append(int(rng.choice(k, p=transition[symbols[-1]])))
    tables = np.stack([np.full(k, 1 / k)] + [transition[s] for s in symbols[:-1]])
    data = encode(symbols, tables)

    def table(i, decoded):
        return np.full(k, 1 / k) if i == 0 else transition[decoded[-1]]

    assert decode(data, table, count=len(symbols)).tolist() == symbols
    assert 8 * len(data) <= code_length_bound(tables, symbols)


def test_coder_errors():
    with pytest.raises(ValueError, match="symbols must be in"):
        encode([3], np.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="tables for"):
        encode([0, 1], np.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="finite and non-negative"):
        quantize_probabilities(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="positive sum"):
        quantize_probabilities(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="precision 8 allows"):
        quantize_probabilities(np.full((1, 200), 1 / 200), precision=8)
    with pytest.raises(ValueError, match="count"):
        decode(b"\x00", lambda i, d: np.ones(2))


@pytest.fixture(scope="module")
def model():
    """A tiny VQ-VAE on the digits, briefly trained (both groups) so the prior is not uniform."""
    from genkernels.data import get_dataset

    torch.manual_seed(0)
    net = VQVAE(VQVAEConfig(channels=(8, 16), num_codes=16, code_dim=4, prior_channels=16, prior_layers=2))
    x = torch.stack([get_dataset("digits", "train")[i][0] for i in range(256)])
    optimizers = {g: torch.optim.Adam(p, lr=3e-3) for g, p in net.optimizer_groups().items()}
    net.train()
    for step in range(20):
        for group, optimizer in optimizers.items():
            loss = net.loss(x[step * 12 % 240:][:32], group=group)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def test_vqvae_files_round_trip_within_the_bound_of_the_prior_nll(model):
    from genkernels.data import get_dataset

    images = torch.stack([get_dataset("digits", "test")[i][0] for i in range(10)])
    codes = model.encode(images)
    data = compress_images(model, images, chunk=4)  # chunks of 4, 4, 2
    assert torch.equal(decompress_codes(model, data), codes)
    decoded = decompress(model, data)
    assert torch.equal(decoded, model.decode_codes(codes))
    nll_bits = float(model.prior_nll(codes).detach().sum()) / math.log(2)
    n, k = codes.numel(), model.config.num_codes
    payload = 8 * (len(data) - 4 - 16)
    # float32 logits of one pass vs the coder's masked passes may differ by ulps: 1e-3 bits/symbol
    assert payload <= nll_bits + n * (math.log2(2**16 / (2**16 - k)) + 1e-4 + 1e-3) + 9
    assert payload >= nll_bits - 0.05 * n
    # training-mode models are put in eval for coding and restored
    model.train()
    assert torch.equal(decompress_codes(model, compress_codes(model, codes)), codes) and model.training
    model.eval()


def test_vqvae_file_errors(model):
    with pytest.raises(ValueError, match="GKVQ"):
        decompress_codes(model, b"nope")
    other = VQVAE(VQVAEConfig(channels=(8, 16), num_codes=8, code_dim=4, prior_channels=8, prior_layers=1))
    data = compress_codes(model, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="over 16 codes"):
        decompress_codes(other, data)
    with pytest.raises(ValueError, match="codes must be a tensor"):
        compress_codes(model, torch.zeros(2, 3, 3, dtype=torch.long))


def test_compression_report(model):
    from genkernels.data import get_dataset

    report = compression_report(model, get_dataset("digits", "test"), max_items=12)
    vq = report["vqvae"]
    assert report["images"] == 12 and report["pixels_per_image"] == 64
    assert vq["lossless_codes"]
    assert vq["payload_bits_per_image"] <= vq["bits_per_image"]
    assert vq["payload_bits_per_image"] <= vq["prior_nll_bits_per_image"] + 16 * 0.01 + 9 / 12 + 1e-6
    assert math.isfinite(vq["psnr_db"]) and vq["psnr_db"] > 5
    assert report["png"]["bits_per_image"] > report["png"]["tiled_bits_per_image"] > 0
    for variant in ("per_file", "tiled"):
        jpeg = report["jpeg"][variant]
        assert 1 <= jpeg["quality"] <= 95 and jpeg["bits_per_image"] > 0
        assert jpeg["psnr_db"] >= vq["psnr_db"] or jpeg["quality"] == 95

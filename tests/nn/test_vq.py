"""genkernels.nn.VectorQuantizer: nearest codes against a brute-force cdist, fp32 distances for
low-precision inputs, the straight-through gradient, the commitment loss, the EMA codebook update
(codes move toward their assigned inputs; the exact formula), data-dependent initialisation,
dead-code restarts, stats, eval mode leaves the codebook alone, and errors."""
import math

import pytest
import torch

from genkernels.nn import VectorQuantizer


def _quantizer(**kwargs):
    vq = VectorQuantizer(8, 4, **kwargs)
    vq.initialized.fill_(True)  # keep the random codebook (no data-dependent init)
    return vq


def test_nearest_matches_brute_force_and_lookup():
    vq = _quantizer().eval()
    z = torch.randn(3, 4, 5, 6)
    codes = vq.nearest(z)
    flat = z.movedim(1, -1).reshape(-1, 4)
    expected = torch.cdist(flat.double(), vq.codebook.double()).argmin(1).view(3, 5, 6)
    assert codes.shape == (3, 5, 6) and codes.dtype == torch.long
    assert torch.equal(codes, expected)
    quantized, codes2, _ = vq(z)
    assert torch.equal(codes2, codes)
    assert torch.equal(quantized, vq.lookup(codes))


def test_distances_are_float32_for_bf16_inputs():
    vq = _quantizer().eval()
    z = torch.randn(2, 4, 3, 3).bfloat16()
    quantized, codes, stats = vq(z)
    assert quantized.dtype == torch.bfloat16
    flat = z.float().movedim(1, -1).reshape(-1, 4)
    assert vq.distances(flat).dtype == torch.float32
    assert torch.equal(codes.flatten(), torch.cdist(flat.double(), vq.codebook.double()).argmin(1))


def test_straight_through_gradient_and_commitment():
    vq = _quantizer(commitment=0.5).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    weight = torch.randn(2, 4, 3, 3)
    quantized, codes, stats = vq(z)
    (quantized * weight).sum().backward()
    assert torch.equal(z.grad, weight)  # the identity, exactly
    z.grad = None
    _, _, stats = vq(z)
    stats["commitment"].backward()
    target = vq.lookup(codes)
    assert torch.allclose(stats["commitment"], 0.5 * (z - target).pow(2).mean())
    assert torch.allclose(z.grad, 0.5 * 2 * (z - target) / z.numel())


def test_ema_update_moves_codes_toward_their_inputs():
    vq = _quantizer(decay=0.9, eps=0.0, restart_dead=False).train()
    z = torch.randn(4, 4, 4, 4) * 0.3 + 1.0
    before = vq.codebook.clone()
    codes = vq.nearest(z)
    flat = z.movedim(1, -1).reshape(-1, 4)
    used = codes.unique()
    means = torch.stack([flat[codes.flatten() == k].mean(0) for k in used])
    size_before = vq.cluster_size.clone()
    sum_before = vq.embed_sum.clone()
    vq(z)
    after = vq.codebook
    # each used code is closer to the mean of its inputs than before
    assert ((after[used] - means).norm(dim=1) < (before[used] - means).norm(dim=1)).all()
    # the exact EMA formula (eps = 0: no smoothing)
    counts = torch.bincount(codes.flatten(), minlength=8).float()
    sums = torch.zeros(8, 4).index_add_(0, codes.flatten(), flat)
    size = 0.9 * size_before + 0.1 * counts
    expected = (0.9 * sum_before + 0.1 * sums) / size.unsqueeze(1)
    assert torch.allclose(vq.cluster_size, size)
    assert torch.allclose(after, expected, atol=1e-6)
    # eval mode (or update=False) leaves the codebook alone
    frozen = after.clone()
    vq.eval()(z)
    vq.train()(z, update=False)
    assert torch.equal(vq.codebook, frozen)


def test_first_training_batch_initialises_the_codebook_from_the_data():
    vq = VectorQuantizer(16, 4).train()
    z = torch.randn(2, 4, 8, 8) + 5.0
    vq(z)
    assert bool(vq.initialized)
    flat = z.movedim(1, -1).reshape(-1, 4)
    # each code is (close to) one of the inputs, far from the N(0, 1) start
    assert (torch.cdist(vq.codebook, flat).min(1).values < 1.0).all()


def test_dead_codes_restart_from_current_inputs():
    vq = _quantizer(decay=0.99, dead_threshold=3).train()
    vq.codebook[1:] = 100.0  # only code 0 is ever chosen: codes 1..7 die
    vq.embed_sum[1:] = 100.0
    z = torch.randn(2, 4, 4, 4)
    flat = z.movedim(1, -1).reshape(-1, 4)
    for step in range(2):
        vq(z)
        assert (vq.codebook[1:] > 50.0).all(), "restarted too early"  # EMA-decayed, not restarted
        assert torch.equal(vq.unused_steps[1:], torch.full((7,), step + 1))
    vq(z)  # third batch without use: restart
    assert (vq.unused_steps == 0).all()
    for code in vq.codebook[1:]:
        assert (flat - code).abs().amax(1).min() == 0  # an exact input vector
    _, codes, stats = vq(z)
    assert codes.unique().numel() > 1 and stats["usage"] > 1 / 8


def test_no_restart_when_disabled():
    vq = _quantizer(dead_threshold=1, restart_dead=False).train()
    vq.codebook[1:] = 100.0
    vq.embed_sum[1:] = 100.0
    for _ in range(3):
        vq(torch.randn(2, 4, 4, 4))
    assert torch.allclose(vq.codebook[1:], torch.full((7, 4), 100.0))


def test_stats_perplexity_and_usage():
    vq = _quantizer().eval()
    codes = torch.tensor([[0, 1], [2, 3]])  # 4 codes once each: perplexity 4, usage 4 / 8
    z = vq.lookup(codes.view(1, 2, 2))
    _, got, stats = vq(z)
    assert torch.equal(got, codes.view(1, 2, 2))
    assert math.isclose(float(stats["perplexity"]), 4.0, rel_tol=1e-5)
    assert float(stats["usage"]) == 0.5
    assert float(stats["commitment"]) == 0.0


def test_state_dict_holds_the_codebook():
    vq = _quantizer()
    other = VectorQuantizer(8, 4)
    other.load_state_dict(vq.state_dict())
    assert torch.equal(other.codebook, vq.codebook) and bool(other.initialized)
    assert not list(vq.parameters())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(8, 4, decay=1.0)
    with pytest.raises(TypeError, match="num_codes"):
        VectorQuantizer(8.0, 4)
    with pytest.raises(ValueError, match="dead_threshold"):
        VectorQuantizer(8, 4, dead_threshold=0)
    vq = _quantizer()
    with pytest.raises(ValueError, match=r"z must have shape \(N, 4"):
        vq(torch.randn(2, 3, 4, 4))
    with pytest.raises(TypeError, match="z must be a floating"):
        vq(torch.ones(2, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must be in"):
        vq.lookup(torch.tensor([[8]]))
    with pytest.raises(TypeError, match="codes must be an integer"):
        vq.lookup(torch.tensor([[1.0]]))

"""DiT denoiser: shapes (8x8x1, 16x16x3, odd batches, int / float t), zero output at
initialisation (adaLN-Zero), unpatchify inverting patchify, the 2D sin-cos position embedding,
class labels with the null class, cross-attention context whose masked tokens never reach the output,
cond channels, gradients to every parameter, config and input errors, and a tiny overfit."""
import pytest
import torch

from genkernels.models.dit import DiT, DiTConfig, sincos_position_embedding


def _tiny(**kw):
    values = dict(dim=32, depth=2, num_heads=2, patch_size=2)
    values.update(kw)
    return DiTConfig(**values)


def _perturbed(config, seed=0, std=0.05):
    torch.manual_seed(seed)
    model = DiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def test_defaults_and_shapes():
    config = DiTConfig()
    assert (config.image_size, config.patch_size, config.dim, config.depth, config.grid_size) == (8, 2, 128, 4, 4)
    model = DiT(_tiny()).eval()
    x = torch.randn(3, 1, 8, 8)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == (3, 1, 8, 8) and torch.equal(out, torch.zeros_like(out))  # adaLN-Zero + zero final layer
    model = _perturbed(_tiny())
    int_t = model(x, torch.tensor([7, 7, 7]))
    assert torch.equal(model(x, torch.tensor([7.0, 7.0, 7.0])), int_t) and torch.equal(model(x, 7), int_t)
    assert not torch.allclose(model(x, torch.tensor([7.5, 7.5, 7.5])), int_t)
    rgb = _tiny(in_channels=3, image_size=16, patch_size=4, out_channels=6, pos_embed="learned")
    assert DiT(rgb)(torch.randn(5, 3, 16, 16), torch.arange(5)).shape == (5, 6, 16, 16)


def test_unpatchify_inverts_patchify_layout():
    model = DiT(_tiny(in_channels=3, image_size=8, patch_size=2))
    image = torch.randn(2, 3, 8, 8)
    # tokens in the layout the final layer writes: (N, T = row-major patches, (p_h, p_w, C))
    tokens = image.unfold(2, 2, 2).unfold(3, 2, 2)  # (N, C, G_h, G_w, p_h, p_w)
    tokens = tokens.permute(0, 2, 3, 4, 5, 1).reshape(2, 16, 12)
    assert torch.equal(model.unpatchify(tokens), image)


def test_sincos_position_embedding():
    emb = sincos_position_embedding(16, 3)
    assert emb.shape == (9, 16)
    grid = emb.reshape(3, 3, 16)
    assert torch.equal(grid[:, 0, :8], grid[:, 2, :8])  # first half: the row only
    assert torch.equal(grid[0, :, 8:], grid[2, :, 8:])  # second half: the column only
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    assert "pos_embed" not in DiT(_tiny()).state_dict()  # fixed: a non-persistent buffer
    assert "pos_embed" in dict(DiT(_tiny(pos_embed="learned")).named_parameters())


def test_class_labels_and_null_class():
    model = _perturbed(_tiny(num_classes=10))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([100, 200, 300])
    null = model(x, t, labels=torch.tensor([10, 10, 10]))
    assert torch.equal(model(x, t), null)
    assert not torch.allclose(model(x, t, labels=torch.tensor([3, 3, 3])), null)
    # from the real initialisation, after two optimiser steps (the first moves only the zero layers)
    torch.manual_seed(0)
    model = DiT(_tiny(num_classes=10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels, target = torch.tensor([1, 2, 10]), torch.randn(3, 1, 8, 8)
    for _ in range(2):
        optimizer.zero_grad()
        (model(x, t, labels) - target).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        gap = model(x, t, torch.tensor([1, 1, 1])) - model(x, t, torch.tensor([10, 10, 10]))
    assert gap.abs().max() > 1e-5


def test_context_masked_tokens_do_not_matter():
    model = _perturbed(_tiny(context_dim=12))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    context = torch.randn(3, 6, 12)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 2:] = False
    mask[2, 4:] = False
    out = model(x, t, context=context, context_mask=mask)
    changed = context.clone()
    changed[~mask] = 50 * torch.randn(int((~mask).sum()), 12)
    assert torch.equal(model(x, t, context=changed, context_mask=mask), out)
    changed[1, 5] += 1
    moved = model(x, t, context=changed, context_mask=mask)
    assert not torch.allclose(moved[1], out[1]) and torch.equal(moved[0], out[0])
    none = model(x, t)
    assert torch.equal(model(x, t, context=context, context_mask=torch.zeros(3, 6, dtype=torch.bool)), none)
    assert not torch.allclose(out, none)


def test_cond_channels():
    model = _perturbed(_tiny(cond_channels=1))
    x, t, cond = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.randn(3, 1, 8, 8)
    assert not torch.allclose(model(x, t, cond=cond), model(x, t, cond=-cond))
    with pytest.raises(ValueError, match="cond must be a tensor of shape"):
        model(x, t)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_gradients_reach_every_parameter(pos_embed):
    model = _perturbed(_tiny(num_classes=4, context_dim=8, cond_channels=1, pos_embed=pos_embed)).train()
    out = model(torch.randn(3, 1, 8, 8), torch.tensor([1.5, 20.0, 700.0]), labels=torch.tensor([0, 3, 4]),
                context=torch.randn(3, 4, 8), context_mask=torch.tensor([[True, True, True, False]] * 3),
                cond=torch.randn(3, 1, 8, 8))
    out.square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_config_and_input_errors():
    with pytest.raises(ValueError, match=r"image_size \(10\) must be divisible by patch_size \(4\)"):
        DiTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by num_heads \(4\)"):
        DiTConfig(dim=30)
    with pytest.raises(ValueError, match="divisible by 4 for the 2D sin-cos"):
        DiTConfig(dim=18, num_heads=2)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        DiTConfig(pos_embed="rope")
    with pytest.raises(ValueError, match="mlp_ratio must be > 0"):
        DiTConfig(mlp_ratio=0)
    with pytest.raises(TypeError, match="depth must be an int"):
        DiTConfig(depth=2.0)
    model = DiT(_tiny())
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must be a tensor \(N, in_channels, image_size, image_size\)"):
        model(torch.randn(2, 1, 16, 16), t)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(2, 1, 8, 8), t, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(torch.randn(2, 1, 8, 8), t, context=torch.randn(2, 3, 8))


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = DiT(_tiny(num_classes=2))
    x0 = torch.randn(8, 1, 8, 8).sign()
    eps = torch.randn(8, 1, 8, 8)
    t = torch.randint(0, 1000, (8,))
    alpha_bar = torch.cos(t / 1000 * torch.pi / 2)[:, None, None, None] ** 2
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        loss = (model(x_t, t, labels) - eps).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]

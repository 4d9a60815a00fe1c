"""MLP denoiser for vectors: shapes, zero output at initialisation, int / float t, class labels with
the null class, context / cond refused, gradients to every parameter, config and input errors, and a
tiny overfit on 2D points (50 Adam steps halve the denoising MSE)."""
import pytest
import torch

from genkernels.models.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig


def _perturbed(config, seed=0, std=0.05):
    torch.manual_seed(seed)
    model = MLPDenoiser(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def test_shapes_zero_init_and_timesteps():
    config = MLPDenoiserConfig()
    assert (config.dim, config.hidden, config.depth, config.time_embed_dim, config.num_classes) == (2, 128, 3, 64, 0)
    out = MLPDenoiser(config)(torch.randn(5, 2), torch.arange(5))
    assert out.shape == (5, 2) and torch.equal(out, torch.zeros(5, 2))
    model = _perturbed(MLPDenoiserConfig(dim=7, hidden=32, depth=2))
    x = torch.randn(3, 7)
    int_t = model(x, torch.tensor([4, 4, 4]))
    assert int_t.shape == (3, 7)
    assert torch.equal(model(x, torch.tensor([4.0, 4.0, 4.0])), int_t) and torch.equal(model(x, 4), int_t)
    assert not torch.allclose(model(x, torch.tensor([4.5, 4.5, 4.5])), int_t)
    assert MLPDenoiser(MLPDenoiserConfig(depth=0))(torch.randn(1, 2), torch.tensor([3])).shape == (1, 2)


def test_class_labels_and_null_class():
    model = _perturbed(MLPDenoiserConfig(num_classes=3, hidden=32))
    x, t = torch.randn(4, 2), torch.tensor([10, 20, 30, 40])
    null = model(x, t, torch.tensor([3, 3, 3, 3]))
    assert torch.equal(model(x, t), null)
    assert not torch.allclose(model(x, t, torch.tensor([0, 1, 2, 0])), null)


def test_gradients_reach_every_parameter():
    model = _perturbed(MLPDenoiserConfig(num_classes=3, hidden=16)).train()
    model(torch.randn(5, 2), torch.rand(5) * 1000, torch.tensor([0, 1, 2, 3, 1])).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        MLPDenoiserConfig(hidden=0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        MLPDenoiserConfig(num_classes=None)
    model = MLPDenoiser(MLPDenoiserConfig(hidden=16))
    x, t = torch.randn(2, 2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="does not take context"):
        model(x, t, context=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="does not take context"):
        model(x, t, context_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not take cond"):
        model(x, t, cond=torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"x must be a tensor \(N, dim\) = \(N, 2\)"):
        model(torch.randn(2, 3), t)
    with pytest.raises(ValueError, match=r"t must have shape \(N,\)"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, labels=torch.tensor([0, 0]))


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = MLPDenoiser(MLPDenoiserConfig(hidden=64, depth=2, num_classes=2))
    angle = torch.rand(64) * 2 * torch.pi
    x0 = torch.stack([angle.cos(), angle.sin()], dim=1)  # points on a circle
    eps, t = torch.randn(64, 2), torch.randint(0, 1000, (64,))
    alpha_bar = torch.cos(t / 1000 * torch.pi / 2)[:, None] ** 2
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    labels = (angle > torch.pi).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = (model(x_t, t, labels) - eps).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]

"""UNet denoiser: shapes (8x8x1, 16x16x3, odd batches, int / float / scalar t), zero output at
initialisation, class labels with the null class, cross-attention context whose masked tokens never
reach the output, concatenated cond channels, gradients to every parameter, config and input errors,
and a tiny overfit (50 Adam steps on a fixed batch halve the denoising MSE)."""
import pytest
import torch

from genkernels.models.unet import UNet, UNetConfig


def _tiny(**kw):
    values = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                  num_heads=2, num_groups=4)
    values.update(kw)
    return UNetConfig(**values)


def _perturbed(config, seed=0, std=0.05):
    """A UNet whose zero-initialised layers are nudged, so every input reaches the output."""
    torch.manual_seed(seed)
    model = UNet(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def test_defaults_and_shapes():
    config = UNetConfig()
    assert (config.image_size, config.base_channels, config.channel_mults, config.output_channels) == (8, 64, (1, 2), 1)
    model = UNet(_tiny()).eval()
    x = torch.randn(3, 1, 8, 8)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == (3, 1, 8, 8) and torch.equal(out, torch.zeros_like(out))  # zero-initialised output
    model = _perturbed(_tiny())
    int_t = model(x, torch.tensor([3, 3, 3]))
    assert torch.equal(model(x, torch.tensor([3.0, 3.0, 3.0])), int_t)  # int and float t agree
    assert torch.equal(model(x, 3), int_t)  # a number is broadcast to the batch
    assert not torch.allclose(model(x, torch.tensor([3.5, 3.5, 3.5])), int_t)  # fractional t
    assert model(torch.randn(5, 1, 16, 12), torch.arange(5)).shape == (5, 1, 16, 12)  # other sizes run

    rgb = UNetConfig(in_channels=3, image_size=16, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                     attention_resolutions=(8, 4), num_heads=2, num_groups=8, out_channels=6, dropout=0.1)
    assert UNet(rgb)(torch.randn(1, 3, 16, 16), torch.tensor([10])).shape == (1, 6, 16, 16)


def test_class_labels_and_null_class():
    model = _perturbed(_tiny(num_classes=10))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([100, 200, 300])
    null = model(x, t, labels=torch.tensor([10, 10, 10]))
    assert torch.equal(model(x, t), null)  # labels None = the null class
    three = model(x, t, labels=torch.tensor([3, 3, 3]))
    assert not torch.allclose(three, null) and not torch.allclose(three, model(x, t, torch.tensor([4, 4, 4])))
    # from the real initialisation: the first optimiser step moves only the zero-initialised output
    # conv (the gradient stops there), the second the ResBlocks' last convs, after which labels matter
    torch.manual_seed(0)
    model = UNet(_tiny(num_classes=10))
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
    mask[1, 5:] = False
    out = model(x, t, context=context, context_mask=mask)
    changed = context.clone()
    changed[~mask] = 50 * torch.randn(int((~mask).sum()), 12)
    assert torch.equal(model(x, t, context=changed, context_mask=mask), out)
    changed[0, 0] += 1  # a real token does matter, and only for its own row
    moved = model(x, t, context=changed, context_mask=mask)
    assert not torch.allclose(moved[0], out[0]) and torch.equal(moved[1:], out[1:])
    none = model(x, t)  # no context = every row masked out
    assert torch.equal(model(x, t, context=context, context_mask=torch.zeros(3, 6, dtype=torch.bool)), none)
    assert not torch.allclose(out, none)


def test_cond_channels_concatenated_at_the_input():
    model = _perturbed(_tiny(cond_channels=2))
    x, t, cond = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.randn(3, 2, 8, 8)
    out = model(x, t, cond=cond)
    assert out.shape == (3, 1, 8, 8) and not torch.allclose(model(x, t, cond=cond + 1), out)
    assert model.conv_in.in_channels == 3
    with pytest.raises(ValueError, match=r"cond must be a tensor of shape \(N, cond_channels, ...\)"):
        model(x, t)
    with pytest.raises(ValueError, match="cond must be a tensor"):
        model(x, t, cond=torch.randn(3, 2, 4, 4))


def test_gradients_reach_every_parameter():
    model = _perturbed(_tiny(num_classes=4, context_dim=8, cond_channels=1)).train()
    x, cond, context = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.randn(3, 4, 8)
    out = model(x, torch.tensor([1.5, 20.0, 700.0]), labels=torch.tensor([0, 3, 4]), context=context,
                context_mask=torch.tensor([[True, True, False, False]] * 3), cond=cond)
    out.square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_config_errors():
    with pytest.raises(ValueError, match=r"image_size must be divisible by 2 \*\* \(len\(channel_mults\) - 1\) = 4"):
        UNetConfig(image_size=10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="attention_resolutions must be among the level resolutions"):
        UNetConfig(attention_resolutions=(3,))
    with pytest.raises(ValueError, match="num_heads .* must divide the width"):
        UNetConfig(base_channels=6, num_heads=5)
    with pytest.raises(ValueError, match="dropout must be in"):
        UNetConfig(dropout=1.0)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        UNetConfig(in_channels=0)
    with pytest.raises(TypeError, match="base_channels must be an int"):
        UNetConfig(base_channels=16.0)
    with pytest.raises(TypeError, match="channel_mults must be a tuple"):
        UNetConfig(channel_mults=2)
    assert UNetConfig(attention_resolutions=()).attention_resolutions == ()
    assert UNet(_tiny(base_channels=12, num_heads=3, num_groups=8)).down[0].res.norm1.num_groups == 6  # clipped


def test_input_errors():
    model = UNet(_tiny(num_classes=3))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must be a tensor \(N, in_channels=1, H, W\)"):
        model(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(2, 1, 7, 8), t)
    with pytest.raises(ValueError, match=r"t must have shape \(N,\) = \(2,\)"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\]"):
        model(x, t, labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(x, t, context=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="cond_channels=0"):
        model(x, t, cond=torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        UNet(_tiny(context_dim=4))(x, t, context=torch.randn(2, 3, 4), context_mask=torch.ones(2, 3))


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = UNet(_tiny(num_classes=2))
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

"""GAN: configuration checks, each loss / spectral-norm / conditional variant runs and sends
gradients to the right network, class-conditional sampling, the WGAN-GP penalty, and a short
CPU training run that beats the untrained generator on the digits-classifier metrics."""
import pytest
import torch

from genkernels.data.digits import DigitsDataset
from genkernels.models import get_model_class
from genkernels.models.gan import GAN, GANConfig

LOSSES = ["nonsaturating", "hinge", "wgan-gp"]


@pytest.fixture(scope="module")
def classifier():
    """Load (or train and cache) the metrics' digits classifier once, before the tests that use it."""
    from genkernels.metrics import digits_classifier

    return digits_classifier()


def _batch(n=8):
    train = DigitsDataset("train")
    return train.images[:n], train.labels[:n]


def _small(**kw):
    return GANConfig(channels=8, latent_dim=8, **kw)


def test_registry_and_config_errors():
    assert get_model_class("gan") is GAN
    with pytest.raises(ValueError, match="loss must be one of"):
        GANConfig(loss="least-squares")
    with pytest.raises(ValueError, match="divisible by 2\\^num_upsamples"):
        GANConfig(image_shape=(1, 8, 8), num_upsamples=4)
    with pytest.raises(ValueError, match="num_classes must be 0"):
        GANConfig(num_classes=1)


def test_optimizer_groups_split_the_parameters():
    model = GAN(_small(num_classes=10))
    groups = model.optimizer_groups()
    assert list(groups) == ["discriminator", "generator"]
    ids = [{id(p) for p in params} for params in groups.values()]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("spectral_norm", [False, True], ids=["plain", "sn"])
@pytest.mark.parametrize("loss", LOSSES)
def test_losses_reach_the_right_network(loss, spectral_norm, conditional):
    model = GAN(_small(loss=loss, spectral_norm=spectral_norm, num_classes=10 if conditional else 0))
    batch = _batch()
    d_params, g_params = model.optimizer_groups().values()

    d_out = model.loss(batch, group="discriminator")
    assert {"loss", "d_real", "d_fake"} <= set(d_out) and torch.isfinite(d_out["loss"])
    assert ("gradient_penalty" in d_out) == (loss == "wgan-gp")
    d_out["loss"].backward()
    assert all(p.grad is not None for p in d_params)
    assert all(p.grad is None for p in g_params)  # the fakes are detached for D's step
    model.zero_grad(set_to_none=True)

    g_out = model.loss(batch, group="generator")
    assert set(g_out) == {"loss", "d_fake"} and torch.isfinite(g_out["loss"])
    g_out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g_params)


def test_loss_needs_a_group():
    model = GAN(_small())
    with pytest.raises(ValueError, match="group='discriminator' or 'generator'"):
        model.loss(_batch())


def test_nonsaturating_loss_values():
    """With D(x) = 0 everywhere, every term is softplus(0) = log 2."""
    model = GAN(_small(loss="nonsaturating", spectral_norm=False))
    for p in model.discriminator.parameters():
        torch.nn.init.zeros_(p)
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(model.loss(_batch(), group="discriminator")["loss"], 2 * log2)
    torch.testing.assert_close(model.loss(_batch(), group="generator")["loss"], log2)


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = <w, x> has gradient w everywhere: the penalty is (|w| - 1)^2, also under no_grad."""
    model = GAN(_small(loss="wgan-gp", spectral_norm=False))
    real, _ = _batch()
    fake = torch.rand_like(real)
    w = torch.randn(1, 8, 8)

    class Linear(torch.nn.Module):
        def forward(self, x, labels=None):
            return (x * w).flatten(1).sum(1)

    model.discriminator = Linear()
    expected = (w.norm() - 1) ** 2
    torch.testing.assert_close(model.gradient_penalty(real, fake, None), expected)
    with torch.no_grad():
        torch.testing.assert_close(model.gradient_penalty(real, fake, None), expected)


def test_class_conditional_sampling():
    model = GAN(_small(num_classes=10)).eval()
    samples = model.sample(12, labels=torch.arange(12) % 10)
    assert samples.shape == (12, 1, 8, 8) and samples.dtype == torch.float32
    assert 0 <= samples.min() and samples.max() <= 1
    assert model.sample(5).shape == (5, 1, 8, 8)  # labels drawn at random
    torch.manual_seed(0)
    one_class = model.sample(4, labels=7)
    torch.manual_seed(0)
    torch.testing.assert_close(one_class, model.sample(4, labels=torch.full((4,), 7)))
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        model.sample(3, labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="labels must be in \\[0, 10\\)"):
        model.sample(2, labels=torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="unconditional"):
        GAN(_small()).sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs \\(images, labels\\)"):
        model.loss(_batch()[0], group="generator")


def test_larger_images_by_configuration():
    model = GAN(GANConfig(image_shape=(3, 16, 16), channels=4, latent_dim=8, num_upsamples=3, num_classes=4))
    assert model.sample(2, labels=torch.tensor([0, 3])).shape == (2, 3, 16, 16)
    batch = (torch.rand(2, 3, 16, 16), torch.tensor([1, 2]))
    assert torch.isfinite(model.loss(batch, group="discriminator")["loss"])


def test_training_beats_the_untrained_generator(classifier):
    """250 steps of a class-conditional hinge GAN with spectral norm (channels 16, batch 64)."""
    torch.manual_seed(0)
    model = GAN(GANConfig(channels=16, num_classes=10, loss="hinge", spectral_norm=True))
    val = DigitsDataset("val")
    model.eval()
    before = model.evaluate(val, max_items=300)
    model.train()
    train = DigitsDataset("train")
    optimizers = {name: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))
                  for name, params in model.optimizer_groups().items()}
    for _ in range(250):
        idx = torch.randint(0, len(train), (64,))
        batch = (train.images[idx], train.labels[idx])
        for name, optimizer in optimizers.items():
            loss = model.loss(batch, group=name)["loss"]
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    after = model.evaluate(val, max_items=300)
    assert set(after) == {"frechet_distance", "class_accuracy"}
    assert before["class_accuracy"] < 0.3 and after["class_accuracy"] > 0.7
    assert after["frechet_distance"] < 0.5 * before["frechet_distance"]


def test_default_training_does_not_collapse(classifier):
    """Unconditional GAN, GANConfig() and GAN.train_defaults through the Trainer (EMA, cosine decay),
    500 steps. With Adam beta1 = 0.5 every sample became the same image within ~50 steps
    (per-pixel std across samples ~0.03, Fréchet distance ~1300); real digits have std ~0.23."""
    from genkernels.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = GAN(GANConfig())
    config = TrainConfig(**{**GAN.train_defaults, "steps": 500}, eval_every=0, eval_max_items=300,
                         checkpoint_every=0, device="cpu", out_dir=None, progress=False)
    trainer = Trainer(model, DigitsDataset("train"), DigitsDataset("val"), config)
    history = trainer.fit()
    samples = trainer.sample(300)  # (300, 1, 8, 8), EMA weights
    assert samples.std(dim=0).mean() > 0.1
    assert history[-1]["eval/frechet_distance"] < 700


def test_figures_are_returned_not_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = GAN(_small(num_classes=10)).eval()
    figures = model.figures(model.sample(16))
    assert list(figures) == ["samples", "classes"]
    assert not any(tmp_path.iterdir())
    classes = figures["classes"]  # 10 x 10 samples with "class k" in a left margin
    assert classes.width >= 512 and classes.width > classes.height
    assert list(GAN(_small()).figures(model.sample(4))) == ["samples"]


@pytest.mark.parametrize("field, value, error", [
    ("gp_weight", -1.0, ValueError), ("gp_weight", float("nan"), ValueError), ("latent_dim", 2.5, TypeError),
    ("channels", 0, ValueError), ("num_classes", -2, ValueError), ("num_classes", 10.0, TypeError),
    ("spectral_norm", 1, TypeError), ("image_shape", (1, 8, 8, 8), ValueError),
])
def test_config_rejects_nonsense_naming_the_field(field, value, error):
    with pytest.raises(error, match=field):
        GANConfig(**{field: value})


def test_sample_rejects_bad_counts_and_labels():
    model = GAN(_small(num_classes=10)).eval()
    for n, error in ((-1, ValueError), (0, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="n must be"):
            model.sample(n)
    for labels in (torch.tensor([1.5, 2.0]), [0.5, 1.0], 2.0, torch.tensor([True, False]), "three"):
        with pytest.raises(TypeError, match="labels must be"):
            model.sample(2, labels=labels)
    assert GAN.sample_conditions() == ["labels"]


def test_trainer_alternates_the_groups(classifier):
    from genkernels.train import TrainConfig, Trainer

    model = GAN(_small(num_classes=10))
    config = TrainConfig(steps=3, batch_size=16, lr=2e-4, betas=(0.5, 0.999), warmup_steps=0, eval_every=0,
                         log_every=1, eval_max_items=32, device="cpu", out_dir=None, progress=False)
    history = Trainer(model, DigitsDataset("train"), DigitsDataset("val"), config).fit()
    train_entry = next(h for h in history if h["kind"] == "train")
    assert {"train/loss", "train/generator_loss", "grad_norm/discriminator", "grad_norm/generator"} <= set(train_entry)
    evals = [h for h in history if h["kind"] == "eval"]
    assert "eval/class_accuracy" in evals[-1] and "eval/frechet_distance" in evals[-1]
    # no held-out "loss" from the EMA discriminator (it ran to 140-52,000 against ~2 in training)
    assert not any(key.startswith("val/") for entry in evals for key in entry)

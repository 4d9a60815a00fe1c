"""VAE: configuration checks, each likelihood and architecture runs and backprops, the decoder
uses the output heads of genkernels.nn.likelihoods (tested there), a short CPU training run beats
the untrained model on held-out ELBO/IWAE bits/dim, the anomaly score ranks corrupted digits above
clean ones, and the figures are returned, not written."""
import math

import pytest
import torch

from genkernels import use_backend
from genkernels.data.digits import DigitsDataset
from genkernels.models import get_model_class
from genkernels.models.vae import VAE, VAEConfig
from genkernels.nn.likelihoods import get_likelihood

LIKELIHOODS = ["bernoulli", "categorical", "logistic"]
ARCHITECTURES = ["mlp", "conv"]


def _batch(n=8, seed=0):
    images, labels = DigitsDataset("train").images, DigitsDataset("train").labels
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx], labels[idx]


def _small(**kw):
    return VAEConfig(hidden=32, channels=(8, 16), latent_dim=4, iwae_samples=4, **kw)


def test_registry_and_config_errors():
    assert get_model_class("vae") is VAE
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAEConfig(likelihood="gaussian")
    with pytest.raises(ValueError, match="architecture must be one of"):
        VAEConfig(architecture="resnet")
    with pytest.raises(ValueError, match="divisible by"):
        VAEConfig(architecture="conv", image_shape=(1, 6, 6), channels=(8, 16, 32))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAEConfig(beta=-1.0)


@pytest.mark.parametrize("field, value, error", [
    ("beta", float("nan"), ValueError), ("beta", float("inf"), ValueError), ("beta", "1", TypeError),
    ("latent_dim", 2.5, TypeError), ("latent_dim", 16.0, TypeError), ("latent_dim", 0, ValueError),
    ("hidden", True, TypeError), ("iwae_samples", -1, ValueError), ("num_levels", 1, ValueError),
    ("num_levels", 17.0, TypeError), ("image_shape", (1, 8), ValueError), ("image_shape", (1, 8.5, 8), TypeError),
    ("channels", (), ValueError), ("likelihood", 3, ValueError),
])
def test_config_rejects_nonsense_naming_the_field(field, value, error):
    with pytest.raises(error, match=field.split("_")[0]):
        VAEConfig(**{field: value})


def test_sample_and_methods_reject_bad_arguments():
    model = VAE(_small())
    for n, error in ((-1, ValueError), (0, ValueError), (2.5, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="n must be"):
            model.sample(n)
    with pytest.raises(ValueError, match="temperature must be finite"):
        model.sample(2, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.sample(2, temperature=-1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        model.sample(2, mode="median")
    with pytest.raises(TypeError, match="k must be an int"):
        model.iwae(_batch()[0], k=2.5)
    with pytest.raises(ValueError, match="max_items must be >= 1"):
        model.evaluate(DigitsDataset("val"), max_items=0)
    with pytest.raises(TypeError, match="config must be a VAEConfig"):
        VAE({"latent_dim": 4})
    assert VAE.sample_conditions() == ["mode", "temperature"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_loss_backprop_and_shapes(likelihood, architecture):
    model = VAE(_small(likelihood=likelihood, architecture=architecture))
    x, y = _batch()
    out = model.loss((x, y))
    assert list(out) == ["loss", "recon", "kl"]
    assert all(v.shape == () and torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss"], (out["recon"] + out["kl"]) / 64)  # beta = 1: nats per dim
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for mode in ("mean", "sample"):
        s = model.sample(5, mode=mode)
        assert s.shape == (5, 1, 8, 8) and s.dtype == torch.float32 and 0 <= s.min() and s.max() <= 1
    assert model.log_prob(x).shape == (8,) and model.iwae(x, k=3).shape == (8,)
    assert model.reconstruct(x).shape == (8, 1, 8, 8)
    assert model.interpolate(x[:2], x[2:4], steps=5).shape == (2, 5, 1, 8, 8)


def test_integer_levels_and_float_images_agree():
    model = VAE(_small())
    x, _ = _batch()
    levels = (x * 16).round().long()
    torch.manual_seed(1)
    from_float = model.loss(x)["loss"]
    torch.manual_seed(1)
    from_levels = model.loss(levels)["loss"]
    assert torch.equal(from_float, from_levels)


def test_beta_weights_the_kl():
    model = VAE(_small(beta=4.0))
    torch.manual_seed(2)
    out = model.loss(_batch()[0])
    torch.testing.assert_close(out["loss"], (out["recon"] + 4.0 * out["kl"]) / 64)


def test_fused_latent_matches_the_reference_backend():
    """The model's reparameterisation goes through reparam_kl: C++ and torch backends agree."""
    model = VAE(_small())
    x = _batch()[0]
    torch.manual_seed(3)
    fused = model.loss(x)
    with use_backend("torch"):
        torch.manual_seed(3)
        reference = model.loss(x)
    for key in fused:
        torch.testing.assert_close(fused[key], reference[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_reconstruction_nll_is_the_output_head(likelihood):
    """The decoder's likelihood is the shared head: the same nats for the same parameters."""
    model = VAE(_small(likelihood=likelihood))
    levels = (_batch()[0] * 16).round().long()
    params = model.decode(torch.randn(8, 4))
    head = get_likelihood(likelihood, 17)
    assert model.config.params_per_pixel == head.params_per_channel == params.shape[1]
    torch.testing.assert_close(model.reconstruction_nll(params, levels), head.nll(params, levels))


@pytest.fixture(scope="module")
def trained():
    """An untrained and a trained (300 Adam steps, batch 64) MLP VAE with the default likelihood."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope runs before conftest's per-test fixture
    try:
        torch.manual_seed(0)
        config = VAEConfig(hidden=128, latent_dim=8, iwae_samples=16)
        untrained, model = VAE(config), VAE(config)
        model.load_state_dict(untrained.state_dict())
        train = DigitsDataset("train")
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(300):
            idx = torch.randint(0, len(train), (64,))
            loss = model.loss((train.images[idx], train.labels[idx]))["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return untrained.eval(), model.eval()
    finally:
        torch.set_num_threads(threads)


def test_training_improves_held_out_bounds(trained):
    untrained, model = trained
    val = DigitsDataset("val")
    torch.manual_seed(0)
    before = untrained.evaluate(val, max_items=200)
    after = model.evaluate(val, max_items=200)
    assert set(after) == {"elbo_bpd", "iwae_bpd", "recon_nats", "kl_nats"}
    assert after["elbo_bpd"] < before["elbo_bpd"] - 0.5
    assert after["iwae_bpd"] <= after["elbo_bpd"]  # the IWAE bound is tighter than the ELBO
    assert after["elbo_bpd"] < math.log2(17)  # beats a uniform model over the 17 levels
    assert after["kl_nats"] > 1.0  # the latent is used (no posterior collapse)


def test_anomaly_score_flags_corrupted_digits(trained):
    _, model = trained
    clean = DigitsDataset("test").images[:100]
    generator = torch.Generator().manual_seed(0)
    noisy = torch.where(torch.rand(clean.shape, generator=generator) < 0.25,
                        torch.randint(0, 17, clean.shape, generator=generator) / 16, clean)
    torch.manual_seed(0)
    clean_score, noisy_score = model.anomaly_score(clean), model.anomaly_score(noisy)
    assert clean_score.shape == (100,)
    assert noisy_score.mean() > clean_score.mean() + 20  # nats per image
    assert (noisy_score > clean_score).float().mean() > 0.9  # per-image: the corrupted copy scores worse
    upside_down = clean.flip(2)  # a digit shape the model has never seen
    assert model.anomaly_score(upside_down).mean() > clean_score.mean()


def test_figures_are_returned_not_written(trained, tmp_path, monkeypatch):
    _, model = trained
    monkeypatch.chdir(tmp_path)
    model.evaluate(DigitsDataset("val"), max_items=16)
    figures = model.figures(model.sample(16))
    assert list(figures) == ["samples", "reconstructions", "interpolations"]
    assert not any(tmp_path.iterdir())  # the model writes nothing; the caller does
    for name, image in figures.items():
        assert image.width >= 512, name  # 8x8 digits enlarged to be seen
    # labels sit in a left margin (reconstructions) or a top margin (interpolations)
    assert figures["reconstructions"].width > figures["samples"].width
    interpolations = figures["interpolations"]  # 8 pairs x 8 steps: square but for the top margin
    assert interpolations.height >= interpolations.width + 10


def test_trainer_runs_a_few_steps(tmp_path):
    from genkernels.train import TrainConfig, Trainer

    model = VAE(_small())
    config = TrainConfig(steps=4, batch_size=16, lr=1e-3, warmup_steps=0, eval_every=0, log_every=2,
                         eval_max_items=32, device="cpu", out_dir=None, progress=False)
    history = Trainer(model, DigitsDataset("train"), DigitsDataset("val"), config).fit()
    evals = [h for h in history if h["kind"] == "eval"]
    assert evals and "eval/elbo_bpd" in evals[-1] and "val/loss" in evals[-1]

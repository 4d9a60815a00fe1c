"""VQVAE: config from the data (code map sizes), codebook usage stays high after a short training on
the digits with dead-code restarts (and collapses without them: the baseline), a tiny training
lowers both groups' losses, fit_prior lowers the prior NLL, the prior is causal over the code map,
sample shapes and seeds, evaluate's metrics, RGB folders, errors, and the CLI train/sample/eval."""
import json
import math

import pytest
import torch

from genkernels.data import get_dataset
from genkernels.models import get_model_class
from genkernels.models.vqvae import VQVAE, VQVAEConfig

TINY = dict(channels=(16, 32), num_codes=32, code_dim=8, prior_channels=16, prior_layers=2)


@pytest.fixture(scope="module")
def digits():
    train = get_dataset("digits", "train")
    return torch.stack([train[i][0] for i in range(1000)]), get_dataset("digits", "test")


def _train(model, x, steps, groups=("autoencoder", "prior"), lr=3e-3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizers = {g: torch.optim.AdamW(p, lr=lr, weight_decay=0.0) for g, p in model.optimizer_groups().items()}
    model.train()
    for _ in range(steps):
        batch = x[torch.randint(0, len(x), (64,), generator=generator)]
        for group in groups:
            loss = model.loss(batch, group=group)["loss"]
            optimizers[group].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[group].step()
    return model.eval()


def test_registered_and_config_from_data(tmp_path):
    assert get_model_class("vqvae") is VQVAE
    config = VQVAE.config_for_data(get_dataset("digits", "train"), {})
    assert config.image_shape == (1, 8, 8) and config.num_levels == 17
    assert config.channels == (32, 64) and config.code_shape == (4, 4)
    assert VQVAEConfig(image_shape=(3, 32, 32)).code_shape == (8, 8)
    assert VQVAEConfig(image_shape=(3, 64, 64)).code_shape == (8, 8)
    assert VQVAEConfig(image_shape=(1, 8, 8), channels=(8, 8, 8)).code_shape == (2, 2)


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by"):
        VQVAEConfig(image_shape=(1, 6, 6), channels=(8, 8, 8))
    with pytest.raises(ValueError, match="num_codes must be >= 2"):
        VQVAEConfig(num_codes=1)
    with pytest.raises(ValueError, match="decay"):
        VQVAEConfig(decay=1.0)
    with pytest.raises(TypeError, match="code_dim"):
        VQVAEConfig(code_dim=2.5)


def test_codebook_usage_stays_high_with_dead_code_restarts(digits):
    """80 autoencoder steps on the digits, seed 0: with restarts (dead after 5 unused batches) at
    least 90% of the 32 codes appear in the held-out code maps; without restarts the codebook
    collapses (measured: 100% vs 12.5%)."""
    x, test = digits
    usage = {}
    for restart in (True, False):
        torch.manual_seed(0)
        model = VQVAE(VQVAEConfig(**TINY, dead_threshold=5, restart_dead=restart))
        _train(model, x, 80, groups=("autoencoder",))
        usage[restart] = model.evaluate(test)["codebook_usage"]
    assert usage[True] >= 0.9
    assert usage[True] > usage[False]


def test_tiny_training_lowers_both_losses_and_fit_prior_lowers_the_prior_nll(digits):
    x, test = digits
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**TINY)).eval()
    fixed = x[:128]
    with torch.no_grad():
        before = {g: float(model.loss(fixed, group=g)["loss"]) for g in ("autoencoder", "prior")}
    _train(model, x, 80)
    with torch.no_grad():
        after = {g: float(model.loss(fixed, group=g)["loss"]) for g in ("autoencoder", "prior")}
    assert after["autoencoder"] < 0.5 * before["autoencoder"]
    assert after["prior"] < before["prior"]  # bits/code (of codes that still move; fit_prior below)
    metrics = model.evaluate(test)
    history = model.fit_prior(get_dataset("digits", "train"), 60, val_dataset=get_dataset("digits", "val"),
                              eval_every=20, lr=2e-3, seed=0)
    refit = model.evaluate(test)
    assert len(history["train"]) == 60 and not model.training
    assert [step for step, _ in history["val"]] == [0, 20, 40, 60] and history["best_step"] > 0
    assert refit["prior_bits_per_image"] < metrics["prior_bits_per_image"]
    assert refit["mse"] == metrics["mse"]  # the autoencoder is untouched
    assert refit["prior_bits_per_image"] < refit["uniform_bits_per_image"] == 16 * math.log2(32)
    assert 0 < refit["mse"] < 0.08 and refit["psnr_db"] > 11
    assert 1 <= refit["perplexity"] <= 32 and 0 < refit["codebook_usage"] <= 1


def test_prior_is_causal_over_the_code_map():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**TINY)).eval()
    codes = torch.randint(0, 32, (2, 4, 4))
    logits = model.prior_logits(codes)
    assert logits.shape == (2, 32, 4, 4)
    for position in range(16):
        changed = codes.clone().flatten(1)
        changed[:, position:] = torch.randint(0, 32, changed[:, position:].shape)
        other = model.prior_logits(changed.view(2, 4, 4)).flatten(2)
        assert torch.allclose(other[:, :, :position + 1], logits.flatten(2)[:, :, :position + 1], atol=1e-5)
    nll = model.prior_nll(codes)
    expected = -torch.log_softmax(logits, 1).gather(1, codes.unsqueeze(1)).flatten(1).sum(1)
    assert torch.allclose(nll, expected, atol=1e-4)


def test_sample_shapes_seeds_and_reconstruct():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**TINY)).eval()
    samples = model.sample(5, seed=3)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, model.sample(5, seed=3))
    codes = model.sample_codes(3, temperature=0.0, seed=0)
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.long
    assert (codes == codes[0]).all()  # greedy: the same map for every sample
    levels = (torch.rand(4, 1, 8, 8) * 16).round().long()
    assert torch.allclose(model.reconstruct(levels), model.reconstruct(levels.float() / 16))
    assert set(model.figures(samples)) == {"samples", "reconstructions"}
    assert VQVAE.sample_conditions() == ["temperature", "seed"]


def test_rgb_images_and_sum_loss():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(image_shape=(3, 16, 16), num_levels=256, **{**TINY, "channels": (8, 16, 16)}))
    x = torch.rand(4, 3, 16, 16)
    losses = model.loss(x)
    assert {"loss", "mse", "commitment", "perplexity", "usage", "prior_loss"} <= set(losses)
    losses["loss"].backward()
    assert model.encode(x).shape == (4, 4, 4)
    assert model.eval().sample(2, seed=0).shape == (2, 3, 16, 16)


def test_errors():
    model = VQVAE(VQVAEConfig(**TINY))
    with pytest.raises(ValueError, match="group must be"):
        model.loss(torch.rand(2, 1, 8, 8), group="generator")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 8, 8\)"):
        model.encode(torch.rand(2, 1, 6, 6))
    with pytest.raises(ValueError, match="codes must have shape"):
        model.decode_codes(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="n must be an int"):
        model.sample(2.0)


def test_cli_train_sample_eval(tmp_path):
    from genkernels.cli import main

    out = tmp_path / "run"
    argv = ["train", "vqvae", "--out", str(out), "--steps", "2", "--batch-size", "16", "--eval-every", "2",
            "--log-every", "1", "--eval-max-items", "32", "--num-samples", "4", "--checkpoint-every", "0",
            "--no-progress", "--device", "cpu", "--set", "channels=(8, 16)", "--set", "num_codes=16",
            "--set", "code_dim=4", "--set", "prior_channels=8", "--set", "prior_layers=2"]
    assert main(argv) == 0
    assert {"samples.png", "metrics.json", "checkpoint"} <= {p.name for p in out.iterdir()}
    assert main(["sample", str(out), "-n", "4", "--seed", "1", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert (tmp_path / "s" / "samples.png").is_file()
    assert main(["eval", str(out), "--max-items", "32", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["eval"]
    expected = {"eval/psnr_db", "eval/prior_bits_per_image", "eval/codebook_usage", "val/loss", "val/prior_loss"}
    assert expected <= set(metrics)

"""M2 (Kingma et al. 2014): the labelled set is balanced and fixed by its seed, the unlabelled loss
is the q(y|x)-expectation of the labelled one minus the entropy (checked by hand), training lowers
the loss, q(y|x) beats chance after a short run, class-conditional samples, and the CLI trains and
evaluates it on the digits."""
import json
import math

import pytest
import torch

from genkernels.data.digits import DigitsDataset
from genkernels.models import get_model_class
from genkernels.models.m2 import M2, M2Config, balanced_label_indices, train_labels_only


def _model(num_labels=20, hidden=32, **kw):
    train = DigitsDataset("train")
    torch.manual_seed(0)
    model = M2(M2.config_for_data(train, {"num_labels": num_labels, "hidden": hidden, "latent_dim": 4, **kw}))
    model.prepare_dataset(train)
    return model, train


def test_registry_config_and_labelled_set():
    assert get_model_class("m2") is M2
    model, train = _model(num_labels=25)
    config = model.config
    assert config.num_train == 1000 and config.alpha_value == pytest.approx(100.0)  # 0.1 N, the paper
    assert len(config.labelled_indices) == 25
    counts = torch.bincount(model.labelled_targets, minlength=10)
    assert counts.tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]  # balanced; the first 25 % 10 classes one more
    assert torch.equal(model.labelled_targets, train.labels[list(config.labelled_indices)])
    assert torch.equal(model.labelled_images, train.images[list(config.labelled_indices)])
    assert balanced_label_indices(train.labels, 25, 10, seed=0) == list(config.labelled_indices)
    assert balanced_label_indices(train.labels, 25, 10, seed=1) != list(config.labelled_indices)
    with pytest.raises(ValueError, match="num_labels must be >= 10"):
        M2Config(num_labels=5)
    with pytest.raises(ValueError, match="labelled_indices must hold"):
        M2Config(num_labels=10, labelled_indices=(1, 2))
    fresh = M2(M2Config(num_labels=10, hidden=8))
    with pytest.raises(ValueError, match="no labelled items"):
        fresh.loss(train.images[:4])
    with pytest.raises(ValueError, match="config_for_data"):
        fresh.prepare_dataset(DigitsDataset("val"))


def test_unlabelled_loss_is_the_expectation_over_classes_minus_the_entropy():
    model, train = _model()
    x = train.images[:5]
    torch.manual_seed(3)
    u = model.unlabelled_loss(x)
    # by hand: L(x, y) for every class y on the same z draws (the same expanded batch and seed)
    torch.manual_seed(3)
    classes = torch.arange(10).repeat(5)
    nelbo = model.negative_elbo(x.repeat_interleave(10, 0), classes).view(5, 10)
    q = model.classify(x).softmax(-1)
    expected = sum(q[:, y] * nelbo[:, y] for y in range(10)) + sum(q[:, y] * q[:, y].log() for y in range(10))
    torch.testing.assert_close(u, expected, rtol=1e-5, atol=1e-3)
    # L(x, y) itself: -log p(x | y, z) + KL + log K >= log K > 0, and U >= min_y L - log K
    assert (nelbo > math.log(10)).all()
    assert (u >= nelbo.min(1).values - math.log(10) - 1e-3).all()


def test_loss_terms_weights_and_gradients():
    model, train = _model()
    torch.manual_seed(0)
    losses = model.loss((train.images[:8], train.labels[:8]))
    assert set(losses) == {"loss", "labelled_nelbo", "unlabelled", "ce"}
    n, n_l, d = 1000, 20, 64
    expected = (n_l / n * losses["labelled_nelbo"] + (n - n_l) / n * losses["unlabelled"] + 0.1 * losses["ce"]) / d
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    # the stream's labels are ignored: the same loss without them
    torch.manual_seed(0)
    torch.testing.assert_close(model.loss(train.images[:8])["loss"], losses["loss"])


def test_training_lowers_the_loss_and_beats_chance():
    # alpha = N (1 nat per item for the labels, 10x the paper's 0.1 N): a short run learns the classes
    model, train = _model(num_labels=50, hidden=64, alpha=1000.0)
    test = DigitsDataset("test")
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def held_out_loss():
        torch.manual_seed(1)
        with torch.no_grad():
            return model.loss(test.images[:128])["loss"].item()

    before = held_out_loss()
    for _ in range(150):
        batch = train.images[torch.randint(0, 1000, (32,), generator=generator)]
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < 0.8 * before
    metrics = model.eval().evaluate(test, max_items=200)
    assert metrics["accuracy"] > 0.4 and metrics["baseline_accuracy"] > 0.4  # chance: 0.1
    assert 0 < metrics["elbo_bpd"] < 5


def test_baseline_is_the_same_architecture_on_the_labels_alone():
    model, train = _model()
    baseline = model.baseline_classifier()
    assert [p.shape for p in baseline.parameters()] == [p.shape for p in model.classifier.parameters()]
    assert baseline is model.baseline_classifier()  # trained once
    again = train_labels_only(model.config, model.labelled_images, model.labelled_targets, seed=0)
    x = train.images[:16].flatten(1) - 0.5
    torch.testing.assert_close(again(x), baseline(x))  # fixed seed: reproducible
    # it fits its labelled items
    assert (baseline(model.labelled_images.flatten(1) - 0.5).argmax(-1) == model.labelled_targets).float().mean() > 0.9


def test_class_conditional_samples():
    model, _ = _model()
    torch.manual_seed(0)
    samples = model.sample(12)
    assert samples.shape == (12, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert model.sample(3, labels=7, mode="sample").shape == (3, 1, 8, 8)
    assert model.sample(2, labels=[1, 2]).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="labels must be"):
        model.sample(2, labels=[1, 10])
    assert "labels" in M2.sample_conditions()
    assert set(model.figures(samples)) == {"samples"}


def test_cli_trains_and_evaluates_m2(tmp_path, capsys):
    from genkernels.cli import main

    out = tmp_path / "run"
    code = main(["train", "m2", "--steps", "2", "--batch-size", "8", "--eval-every", "2", "--eval-max-items", "16",
                 "--num-samples", "10", "--no-progress", "--device", "cpu", "--out", str(out),
                 "--set", "hidden=16", "--set", "num_labels=50", "--set", "baseline_steps=5"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    assert "eval/accuracy" in summary["eval"] and "eval/baseline_accuracy" in summary["eval"]
    capsys.readouterr()
    code = main(["eval", str(out), "--max-items", "20", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["baseline_accuracy"] <= 1 and metrics["elbo_bpd"] > 0

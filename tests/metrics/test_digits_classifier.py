import importlib
import json

import pytest
import torch

from genkernels.data.digits import load_digits_tensors
from genkernels.metrics.digits_classifier import (
    class_accuracy,
    digits_classifier,
    digits_features,
    digits_sample_metrics,
    frechet_distance,
)

# The package re-exports the function digits_classifier under the module's own name.
dc = importlib.import_module("genkernels.metrics.digits_classifier")


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """A cache folder holding a classifier trained once for this module (a few seconds)."""
    folder = tmp_path_factory.mktemp("genkernels_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENKERNELS_CACHE", str(folder))
        patch.setattr(dc, "_loaded", {})
        digits_classifier()
        yield folder


@pytest.fixture
def cache(trained_cache, monkeypatch):
    monkeypatch.setenv("GENKERNELS_CACHE", str(trained_cache))
    return trained_cache


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GENKERNELS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dc.cache_dir() == tmp_path / "genkernels"
    monkeypatch.setenv("GENKERNELS_CACHE", str(tmp_path / "mine"))
    assert dc.cache_dir() == tmp_path / "mine"


def test_classifier_is_accurate_on_the_test_split(cache):
    images, labels = load_digits_tensors("test", "float")
    meta = json.loads((cache / "digits_classifier.json").read_text())
    accuracy = class_accuracy(images, labels)
    assert accuracy >= 0.95
    assert meta["test_accuracy"] == pytest.approx(accuracy, abs=0.005)
    assert not digits_classifier().training
    # Conditioning on the wrong labels must score low.
    assert class_accuracy(images, (labels + 1) % 10) < 0.1


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_first_use_may_come_under_no_grad(tmp_path, monkeypatch, grad_mode):
    monkeypatch.setenv("GENKERNELS_CACHE", str(tmp_path))
    monkeypatch.setattr(dc, "_loaded", {})
    short_recipe = dc.ClassifierConfig(epochs=3)
    monkeypatch.setattr(dc, "ClassifierConfig", lambda: short_recipe)
    images, labels = load_digits_tensors("val", "float")
    with grad_mode():
        accuracy = class_accuracy(images, labels)  # trains a short-recipe classifier here
    assert accuracy > 0.5


def test_cached_classifier_is_reloaded_without_training(cache, monkeypatch):
    original = digits_classifier().state_dict()
    monkeypatch.setattr(dc, "_loaded", {})
    monkeypatch.setattr(dc, "_train", lambda config: pytest.fail("retrained despite a valid cache"))
    reloaded = digits_classifier()
    for name, tensor in original.items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["corrupt_weights", "missing_json", "other_config"])
def test_damaged_cache_is_retrained(tmp_path, monkeypatch, trained_cache, damage):
    for name in ("digits_classifier.safetensors", "digits_classifier.json"):
        (tmp_path / name).write_bytes((trained_cache / name).read_bytes())
    if damage == "corrupt_weights":
        (tmp_path / "digits_classifier.safetensors").write_bytes(b"\x00" * 100)
    elif damage == "missing_json":
        (tmp_path / "digits_classifier.json").unlink()
    else:
        meta = json.loads((tmp_path / "digits_classifier.json").read_text())
        meta["config"]["epochs"] += 1
        (tmp_path / "digits_classifier.json").write_text(json.dumps(meta))
    calls = []

    def fake_train(config):  # an untrained network stands in: the point is that training ran
        calls.append(config)
        return dc.DigitsClassifier(config).eval()

    monkeypatch.setenv("GENKERNELS_CACHE", str(tmp_path))
    monkeypatch.setattr(dc, "_loaded", {})
    monkeypatch.setattr(dc, "_train", fake_train)
    digits_classifier()
    assert len(calls) == 1
    monkeypatch.setattr(dc, "_loaded", {})
    digits_classifier()  # the rewritten cache is valid: no second training
    assert len(calls) == 1


def test_frechet_distance(cache):
    test, _ = load_digits_tensors("test", "float")
    val, _ = load_digits_tensors("val", "float")
    noise = torch.rand_like(test)
    assert frechet_distance(test, test) == pytest.approx(0.0, abs=1e-6)
    real = frechet_distance(test, val)
    assert 0 < real < frechet_distance(test, noise) / 5
    assert frechet_distance(test, val) == pytest.approx(frechet_distance(val, test), rel=1e-6)
    assert digits_features(test[:5]).shape == (5, dc.ClassifierConfig().feature_dim)


def test_sample_metrics(cache):
    val, labels = load_digits_tensors("val", "float")
    metrics = digits_sample_metrics(val, labels)
    assert set(metrics) == {"frechet_distance", "class_accuracy", "num_samples"}
    assert metrics["class_accuracy"] >= 0.95 and metrics["num_samples"] == 350
    assert metrics["frechet_distance"] == pytest.approx(frechet_distance(val, load_digits_tensors("test")[0]))
    assert set(digits_sample_metrics(val[:, 0], reference=val)) == {"frechet_distance", "num_samples"}
    assert digits_sample_metrics(val, reference=val)["frechet_distance"] == pytest.approx(0.0, abs=1e-6)


def test_bad_images(cache):
    images, labels = load_digits_tensors("val", "float")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        class_accuracy(images * 2 - 1, labels)  # [-1, 1] data
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digits_features(torch.zeros(3, 1, 28, 28))
    with pytest.raises(ValueError, match="one entry per sample"):
        class_accuracy(images, labels[:-1])
    with pytest.raises(ValueError, match=">= 2 images"):
        frechet_distance(images[:1], images)


def test_unwritable_cache_warns_and_still_returns_a_classifier(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GENKERNELS_CACHE", str(blocker))
    monkeypatch.setattr(dc, "_loaded", {})
    monkeypatch.setattr(dc, "_train", lambda config: dc.DigitsClassifier(config).eval())
    with pytest.warns(UserWarning, match="could not cache"):
        model = digits_classifier()
    assert isinstance(model, dc.DigitsClassifier) and not model.training

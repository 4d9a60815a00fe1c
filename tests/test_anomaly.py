"""genkernels.anomaly: the held-out-classes split, per-family scores (shapes, seeds, errors), a VAE
trained on one digit class ranks the other classes as anomalies, and the ROC AUC table runs end to
end for the four families."""
import dataclasses

import pytest
import torch

from genkernels.anomaly import (anomaly_scores, anomaly_table, default_method, digits_families, format_table,
                                held_out_classes_split, train_on_normal)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small(split, n=60):
    """The first n test items of each kind (normal, anomalous), for speed."""
    keep = torch.cat([torch.nonzero(~split.is_anomaly).flatten()[:n], torch.nonzero(split.is_anomaly).flatten()[:n]])
    return dataclasses.replace(split, test_images=split.test_images[keep], test_labels=split.test_labels[keep],
                               is_anomaly=split.is_anomaly[keep])


def test_held_out_classes_split():
    split = held_out_classes_split(normal_classes=[0, 1, 2])
    assert split.normal_classes == (0, 1, 2) and split.anomalous_classes == (3, 4, 5, 6, 7, 8, 9)
    assert torch.equal(split.is_anomaly, split.test_labels >= 3)
    assert split.train_images.shape[1:] == (1, 8, 8) and len(split.test_images) == 350 + 447
    assert held_out_classes_split(held_out=[3, 4, 5, 6, 7, 8, 9]).normal_classes == (0, 1, 2)
    drawn = held_out_classes_split(seed=4)
    assert len(drawn.normal_classes) == 5 and drawn.normal_classes == held_out_classes_split(seed=4).normal_classes
    with pytest.raises(ValueError, match="not both"):
        held_out_classes_split([0], [1])
    with pytest.raises(ValueError, match="proper subset"):
        held_out_classes_split(normal_classes=range(10))


def test_scores_per_family_shapes_seeds_and_errors():
    x = held_out_classes_split(normal_classes=[0]).test_images[:6]
    torch.manual_seed(0)
    models = {name: factory() for name, factory in digits_families("tiny").items()}
    methods = {"vae": "elbo", "realnvp": "nll", "pixelcnn": "nll", "diffusion": "denoising"}
    for name, model in models.items():
        assert default_method(model) == methods[name]
        scores = anomaly_scores(model, x, num_samples=2)
        assert scores.shape == (6,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
        torch.testing.assert_close(anomaly_scores(model, x, num_samples=2), scores)  # fixed seed
    vae = models["vae"]
    assert anomaly_scores(vae, x, "iwae", num_samples=3).shape == (6,)
    # -IWAE_k <= -ELBO on average (IWAE is the tighter bound)
    iwae, elbo = (anomaly_scores(vae, x, method, num_samples=16).mean() for method in ("iwae", "elbo"))
    assert iwae <= elbo
    with pytest.raises(ValueError, match="needs a VAE"):
        anomaly_scores(models["pixelcnn"], x, "iwae")
    with pytest.raises(ValueError, match="needs a diffusion"):
        anomaly_scores(vae, x, "denoising")
    with pytest.raises(ValueError, match="method must be one of"):
        anomaly_scores(vae, x, "mse")


def test_vae_trained_on_one_class_flags_the_others():
    split = _small(held_out_classes_split(normal_classes=[0]))
    torch.manual_seed(0)
    vae = digits_families("tiny")["vae"]()
    rows_before = anomaly_table({"vae": vae}, split, num_samples=2)
    train_on_normal(vae, split.train_images, 150, batch_size=32, seed=0)
    rows = anomaly_table({"vae": vae}, split, num_samples=2)
    assert rows[0]["roc_auc"] > 0.85 and rows[0]["roc_auc"] > rows_before[0]["roc_auc"]
    assert rows[0]["anomalous_score"] > rows[0]["normal_score"]


def test_table_end_to_end_for_every_family():
    split = _small(held_out_classes_split(normal_classes=[0, 1, 2, 3, 4]), n=40)
    rows = anomaly_table(digits_families("tiny"), split, train_steps=3, batch_size=16, num_samples=1, seed=0)
    assert [row["family"] for row in rows] == ["vae", "realnvp", "pixelcnn", "diffusion"]
    for row in rows:
        assert 0 <= row["roc_auc"] <= 1 and 0 < row["average_precision"] <= 1
    text = format_table(rows)
    assert "ROC AUC" in text and len(text.splitlines()) == 5

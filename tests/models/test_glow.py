"""Glow: config checks; the bijection inverts (fp32, fp64) and its log-determinant is the autograd
Jacobian's (affine and additive couplings, LU and full 1x1 convs, class-conditional); log p is the
priors plus the log-determinant; recompute-by-inverse gives the stored path's gradients; temperature
scales every prior's std; class-conditional priors condition the samples; a short seeded training
run beats the uniform bound on held-out digits; the CLI trains, samples and evaluates it."""
import json
import math

import pytest
import torch

from genkernels.data import get_dataset
from genkernels.models import get_model_class
from genkernels.models.glow import Glow, GlowConfig, gaussian_log_prob

UNIFORM_BPD = math.log2(17)  # 4.09: every level equally likely

TINY = dict(data_shape=(1, 4, 4), num_levels=17, num_scales=2, steps_per_scale=2, hidden_channels=8)
CASES = {
    "affine": TINY,
    "additive": {**TINY, "coupling": "additive"},
    "full-conv": {**TINY, "lu": False},
    "classes": {**TINY, "num_classes": 3},
    "rgb-3-scales": {**TINY, "data_shape": (3, 8, 8), "num_scales": 3, "steps_per_scale": 1},
}


def _model(case="affine", seed=0, dtype=torch.float32, **kw):
    """A model with initialised ActNorms and every parameter (priors included) perturbed away from
    its initialisation, so the checks see a non-trivial bijection and non-trivial priors."""
    torch.manual_seed(seed)
    model = Glow(GlowConfig(**{**CASES[case], **kw})).to(dtype)
    model.train()
    model.log_prob_continuous(_inputs(model, 32, seed=seed + 1), _labels(model, 32))  # ActNorm init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _inputs(model, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.config.data_shape, generator=generator).to(model.dtype)


def _labels(model, n):
    return torch.arange(n) % model.config.num_classes if model.config.num_classes else None


# -- config ----------------------------------------------------------------------------------
def test_registry_and_defaults():
    assert get_model_class("glow") is Glow and Glow.default_data == "digits-levels"
    assert GlowConfig().data_shape == (1, 8, 8) and set(Glow.data_kinds) == {"image", "image-levels"}
    model = _model()
    assert model.latent_shapes == [(2, 2, 2), (8, 1, 1)]  # split half at scale 0, the rest at the top


@pytest.mark.parametrize("values, error, match", [
    (dict(data_shape=(1, 6, 6)), ValueError, "divisible by 2\\^num_scales = 4"),
    (dict(data_shape=(2,), num_levels=0), ValueError, "image shape"),
    (dict(coupling="spline"), ValueError, "coupling must be one of"),
    (dict(steps_per_scale=0), ValueError, "steps_per_scale"),
    (dict(num_scales=2.0), TypeError, "num_scales"),
    (dict(lu="yes"), TypeError, "lu"),
    (dict(recompute=None), TypeError, "recompute"),
    (dict(num_classes=-1), ValueError, "num_classes"),
    (dict(preprocess="tanh"), ValueError, "preprocess"),
])
def test_config_rejects_nonsense_naming_the_field(values, error, match):
    with pytest.raises(error, match=match):
        GlowConfig(**values)


def test_glow_refuses_points():
    with pytest.raises(ValueError, match="glow trains on image"):
        Glow.config_for_data(get_dataset("moons", "val", n=10))


# -- the bijection ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float64, 1e-11)])
def test_inverse_of_forward_is_the_identity(case, dtype, atol):
    model = _model(case, dtype=dtype)
    x, labels = _inputs(model, 8, seed=5), _labels(model, 8)
    z, logdet = model.transform(x, labels)
    assert z.shape == (8, model.num_dims) and logdet.shape == (8,) and z.dtype == dtype
    back, inverse_logdet = model.inverse_transform(z, labels)
    assert (back - x).abs().max().item() < atol
    assert (logdet + inverse_logdet).abs().max().item() < atol * 100
    assert logdet.abs().max() > 1e-3  # not the identity


@pytest.mark.parametrize("case", list(CASES))
def test_logdet_is_the_log_abs_det_of_the_autograd_jacobian(case):
    model = _model(case, dtype=torch.float64)
    x, labels = _inputs(model, 2, seed=7), _labels(model, 2)
    _, logdet = model.transform(x, labels)
    for i in range(2):
        item_labels = None if labels is None else labels[i: i + 1]

        def flat_map(v, item_labels=item_labels):
            return model.transform(v.view(1, *model.config.data_shape), item_labels)[0][0]

        jacobian = torch.autograd.functional.jacobian(flat_map, x[i].reshape(-1))  # (D, D)
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-8)


def test_log_prob_is_the_priors_plus_the_logdet():
    model = _model("classes", dtype=torch.float64)
    x, labels = _inputs(model, 4, seed=2), _labels(model, 4)
    context = model.class_context(labels)
    latents, kept, logdet = model._encode(x, context)
    expected = (logdet + gaussian_log_prob(latents[1], *model.top_prior(4, context))
                + gaussian_log_prob(latents[0], *model.split_priors[0](kept[0], context)))
    torch.testing.assert_close(model.log_prob_continuous(x, labels), expected)
    # the priors are not N(0, I): the perturbed convs and top parameters matter
    standard = logdet - 0.5 * (model.transform(x, labels)[0].pow(2) + math.log(2 * math.pi)).sum(1)
    assert (model.log_prob_continuous(x, labels) - standard).abs().min() > 1e-3


@pytest.mark.parametrize("case", ["affine", "classes"])
def test_recompute_by_inverse_gives_the_stored_gradients(case):
    stored = _model(case, dtype=torch.float64)
    recomputed = _model(case, dtype=torch.float64, recompute=True)
    recomputed.load_state_dict(stored.state_dict())
    x, labels = _inputs(stored, 8, seed=3), _labels(stored, 8)
    grads = []
    for model in (stored, recomputed):
        model.train()
        model.zero_grad()
        (-model.log_prob_continuous(x, labels).mean()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-7, atol=1e-9, msg=name)


# -- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, 0.5, 0.7, 1.0])
def test_temperature_samples_are_images_on_the_levels(temperature):
    model = _model()
    samples = model.sample(6, temperature=temperature, seed=1)
    assert samples.shape == (6, 1, 4, 4) and samples.dtype == torch.float32 and torch.isfinite(samples).all()
    levels = samples * 16
    assert torch.equal(levels, levels.round()) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, model.sample(6, temperature=temperature, seed=1))
    if temperature == 0:  # every latent is its prior's mean: one deterministic image
        assert torch.equal(samples, samples[:1].expand_as(samples))


def test_temperature_scales_the_prior_std():
    model = _model("classes", dtype=torch.float64)
    labels = _labels(model, 64)
    context = model.class_context(labels)
    noise = {}
    for t in (0.5, 1.0):  # the same base noise eps for both: the same seed
        x = model.sample_continuous(64, t, labels, generator=torch.Generator().manual_seed(0))
        latents, kept, _ = model._encode(x, context)
        priors = [model.split_priors[0](kept[0], context), model.top_prior(64, context)]
        # each latent is mean + T sigma eps, its prior's mean and sigma given the scales above it
        noise[t] = [(z - mean) * torch.exp(-log_std) for z, (mean, log_std) in zip(latents, priors)]
    for cold, hot in zip(noise[0.5], noise[1.0]):
        torch.testing.assert_close(2 * cold, hot, rtol=1e-6, atol=1e-8)
        assert 0.8 < hot.std() < 1.2  # eps ~ N(0, 1)


def test_class_conditional_prior_conditions_the_samples():
    model = _model("classes")
    samples = model.sample(4, labels=[0, 1, 2, 1], seed=0)
    assert samples.shape == (4, 1, 4, 4)
    assert not torch.equal(samples, model.sample(4, labels=[2, 2, 2, 2], seed=0))
    x = torch.randint(0, 17, (3, 1, 4, 4))
    scores = [model.log_prob(x, labels=torch.full((3,), k), generator=torch.Generator().manual_seed(0))
              for k in range(3)]
    assert not torch.allclose(scores[0], scores[1])
    with pytest.raises(ValueError, match="class-conditional"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="unconditional"):
        _model().sample(2, labels=[0, 1])


# -- training --------------------------------------------------------------------------------
def test_a_short_training_run_beats_the_uniform_bound_on_held_out_digits():
    train, val = get_dataset("digits-levels", "train"), get_dataset("digits-levels", "val")
    torch.manual_seed(0)
    model = Glow(Glow.config_for_data(train, dict(steps_per_scale=2, hidden_channels=16)))
    torch.manual_seed(1)
    before = model.eval().evaluate(val, max_items=200)["nll_bpd"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(40):
        index = torch.randint(0, len(train), (64,), generator=generator)
        loss = model.loss((train.images[index], train.labels[index]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.manual_seed(1)
    metrics = model.eval().evaluate(val, max_items=200)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5
    assert metrics["nll_bpd"] < UNIFORM_BPD - 0.8 and metrics["nll_bpd"] < before - 0.5, (before, metrics)


# -- the command line ------------------------------------------------------------------------
def test_cli_trains_samples_and_evaluates_a_tiny_glow(tmp_path, capsys):
    from genkernels.cli import main

    out = tmp_path / "run"
    code = main(["train", "glow", "--steps", "4", "--batch-size", "16", "--eval-every", "2",
                 "--eval-max-items", "32", "--num-samples", "4", "--no-progress", "--device", "cpu",
                 "--out", str(out), "--set", "hidden_channels=8", "--set", "steps_per_scale=1",
                 "--set", "num_classes=10", "--set", "recompute=True"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(summary["eval"]["eval/nll_bpd"])
    assert {"samples.png", "temperatures.png", "checkpoint"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    code = main(["sample", str(out), "-n", "3", "--seed", "1", "--condition", "temperature=0.7",
                 "--condition", "labels=3", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "s" / "samples.png").exists()
    capsys.readouterr()
    code = main(["eval", str(out), "--max-items", "40", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert math.isfinite(json.loads(captured.out)["metrics"]["nll_bpd"])

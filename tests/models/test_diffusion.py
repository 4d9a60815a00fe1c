"""Diffusion model: config checks and fitting to data, the loss on every backbone and conditioning,
sampling (shapes, range, seeds, batched classifier-free guidance), inpainting (known region exact,
RePaint), DDIM inversion round trip, evaluate/figures, and a short swiss-roll training run that
lowers the MMD to held-out points below the untrained model's."""
import pytest
import torch

from genkernels.data import get_dataset
from genkernels.data.digits import DigitsDataset
from genkernels.models import get_model_class
from genkernels.models.diffusion import Diffusion, DiffusionConfig

TINY_UNET = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "attention_resolutions": (4,),
             "num_heads": 2, "num_groups": 4}
TINY_DIT = {"backbone": "dit", "dim": 16, "depth": 1, "num_heads": 2}
TINY_MLP = {"hidden": 32, "depth": 1}


def _digits(n=8):
    train = DigitsDataset("train")
    return train.images[:n], train.labels[:n]


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    data = get_dataset("moons", "train", n=64) if overrides.get("backbone") == "mlp" else DigitsDataset("train")
    values = dict(TINY_MLP if overrides.get("backbone") == "mlp" else TINY_UNET)
    values.update(overrides)
    if values.get("backbone") == "mlp":
        values.pop("backbone")
    return Diffusion(Diffusion.config_for_data(data, values)).eval()


def _batch_for(model, n=8):
    if not model.config.images:
        return get_dataset("moons", "train", n=n).points
    return _digits(n)


# -- configuration --------------------------------------------------------------------------
def test_registry_and_config_for_data():
    assert get_model_class("diffusion") is Diffusion
    digits = Diffusion.config_for_data(DigitsDataset("train"), {})
    assert digits.data_shape == (1, 8, 8) and digits.backbone == "unet"
    assert digits.conditioning == "class" and digits.num_classes == 10 and digits.label_dropout == 0.1
    toys = Diffusion.config_for_data(get_dataset("swissroll", "train", n=16), {})
    assert toys.data_shape == (2,) and toys.backbone == "mlp" and toys.conditioning == "none"
    plain = Diffusion.config_for_data(DigitsDataset("train"), {"conditioning": "none"})
    assert plain.num_classes == 0


@pytest.mark.parametrize("values, error, match", [
    ({"backbone": "gru"}, ValueError, "backbone must be one of"),
    ({"prediction": "score"}, ValueError, "prediction must be one of"),
    ({"conditioning": "class"}, ValueError, "num_classes >= 2"),
    ({"num_classes": 10}, ValueError, "needs conditioning='class'"),
    ({"backbone": "mlp"}, ValueError, "is for vectors"),
    ({"data_shape": (2,)}, ValueError, "use backbone='mlp'"),
    ({"conditioning": "superres", "superres_factor": 3}, ValueError, "must divide"),
    ({"label_dropout": 1.0}, ValueError, "label_dropout"),
    ({"sample_steps": 2000}, ValueError, "sample_steps"),
    ({"base_channels": 8.0}, TypeError, "base_channels must be an int"),
    ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be finite"),
])
def test_bad_configs_name_the_field(values, error, match):
    with pytest.raises(error, match=match):
        DiffusionConfig(**values)


def test_config_for_other_image_sizes():
    """A folder of 16x16 RGB images (no labels): unconditional, attention at the lowest resolution."""
    class Folder(torch.utils.data.Dataset):
        kind = "image"

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3, 16, 16)

    config = Diffusion.config_for_data(Folder(), {"base_channels": 8, "num_heads": 2, "num_groups": 4})
    assert config.data_shape == (3, 16, 16) and config.conditioning == "none" and config.attention_resolutions == (8,)
    model = Diffusion(config)
    assert torch.isfinite(model.loss(torch.rand(2, 3, 16, 16))["loss"])
    assert model.sample(2, steps=2).shape == (2, 3, 16, 16)
    assert Diffusion.config_for_data(Folder(), {"channel_mults": (1, 2, 2)}).attention_resolutions == (4,)


def test_check_dataset_refuses_other_data():
    model = _model()
    with pytest.raises(ValueError, match="shape"):
        model.check_dataset(get_dataset("moons", "train", n=8), "moons")


# -- loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {}, TINY_DIT, {"backbone": "mlp"}, {"conditioning": "none"}, {"conditioning": "caption", "text_dim": 16,
                                                                  "text_depth": 1},
    {"conditioning": "superres"}, {"prediction": "epsilon"}, {"prediction": "x0", "min_snr_gamma": 0.0},
], ids=["unet-class", "dit", "mlp", "unet-none", "caption", "superres", "epsilon", "x0-unweighted"])
def test_loss_is_finite_and_reaches_every_trained_parameter(overrides):
    model = _model(**overrides).train()
    loss = model.loss(_batch_for(model))["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the zero-initialised output layer gets a gradient, so training can start
    assert any(g.abs().sum() > 0 for g in grads)


def test_loss_refuses_bad_batches():
    model = _model()
    with pytest.raises(ValueError, match="needs \\(items, labels\\)"):
        model.loss(_digits()[0])
    with pytest.raises(ValueError, match="shape"):
        model.loss((torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match="float"):
        model.loss(((_digits()[0] * 16).long(), _digits()[1]))


# -- sampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, TINY_DIT, {"backbone": "mlp"}], ids=["unet", "dit", "mlp"])
@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver", "euler", "euler_ancestral"])
def test_sample_shape_range_and_seed(overrides, sampler):
    model = _model(**overrides)
    with torch.no_grad():  # an untrained denoiser outputs 0: give it some weights to shape the samples
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = model.sample(6, steps=4, sampler=sampler, seed=3)
    b = model.sample(6, steps=4, sampler=sampler, seed=3)
    c = model.sample(6, steps=4, sampler=sampler, seed=4)
    assert a.shape == (6, *model.config.data_shape) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    if model.config.images:
        assert a.min() >= 0 and a.max() <= 1


def test_guidance_batches_conditional_and_unconditional_rows_in_one_forward():
    model = _model()
    calls = []
    handle = model.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((args[0].shape[0], kwargs["labels"].clone())), with_kwargs=True)
    out = model.sample(3, steps=5, sampler="ddim", labels=[7], guidance_scale=3.0, seed=0)
    handle.remove()
    assert out.shape == (3, 1, 8, 8)
    assert len(calls) == 5  # 5 steps, each ONE forward of 2N rows: N with the label, N with the null class
    assert all(n == 6 for n, _ in calls)
    assert calls[0][1].tolist() == [7, 7, 7, 10, 10, 10]
    calls.clear()
    handle = model.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(args[0].shape[0]), with_kwargs=True)
    model.sample(3, steps=5, sampler="ddim", guidance_scale=1.0, seed=0)  # scale 1: no unconditional pass
    handle.remove()
    assert calls == [3] * 5


def test_guidance_changes_the_samples_and_labels_cycle():
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g1 = model.sample(4, steps=4, sampler="ddim", labels=[1, 2], guidance_scale=1.0, seed=0)
    g5 = model.sample(4, steps=4, sampler="ddim", labels=[1, 2], guidance_scale=5.0, seed=0)
    assert not torch.allclose(g1, g5)
    assert model._labels([1, 2], 5).tolist() == [1, 2, 1, 2, 1]
    assert model._labels(None, 12).tolist() == list(range(10)) + [0, 1]


def test_sample_refuses_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="sampler must be one of"):
        model.sample(2, sampler="heun")
    with pytest.raises(ValueError, match="steps must be <= num_steps"):
        model.sample(2, steps=5000)
    with pytest.raises(ValueError, match="labels must be in \\[0, 10\\)"):
        model.sample(2, labels=[11])
    with pytest.raises(TypeError, match="integer class indices"):
        model.sample(2, labels=[1.5])
    with pytest.raises(ValueError, match="caption was given"):
        model.sample(2, caption="three")
    with pytest.raises(ValueError, match="guidance_scale"):
        _model(conditioning="none").sample(2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0)


# -- inpainting -----------------------------------------------------------------------------
@pytest.mark.parametrize("resample, sampler", [(1, "ddim"), (1, "dpm_solver"), (3, "ddim")])
def test_inpaint_keeps_the_known_region_exactly(resample, sampler):
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = _digits(4)[0]
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :4, :] = True
    out = model.inpaint(images, mask, steps=6, sampler=sampler, resample=resample, seed=1)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[..., :4, :], images[..., :4, :])
    assert not torch.equal(out[..., 4:, :], images[..., 4:, :])
    again = model.inpaint(images, mask, steps=6, sampler=sampler, resample=resample, seed=1)
    assert torch.equal(out, again)


def test_inpaint_renoises_the_known_region_at_every_step(monkeypatch):
    """After every step but the last the known pixels are replaced by q_sample(x0, t_next): one
    q_sample call per step, at the timesteps the sampler reaches (RePaint: per repeat)."""
    import genkernels.diffusion as diffusion

    model = _model()
    images = _digits(2)[0]
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :, :4] = True
    seen = []
    original = diffusion.q_sample

    def counting(x0, noise, t, schedule, prediction="epsilon"):
        seen.append(int(t))
        return original(x0, noise, t, schedule, prediction)

    monkeypatch.setattr(diffusion, "q_sample", counting)
    model.inpaint(images, mask, steps=4, sampler="ddim", seed=0)
    assert seen == [666, 333, 0]  # steps 999 -> 666 -> 333 -> 0 -> clean (the input itself)
    seen.clear()
    model.inpaint(images, mask, steps=4, sampler="ddim", resample=2, seed=0)
    assert seen == [666, 666, 333, 333, 0, 0]


def test_inpaint_refuses_bad_input():
    model = _model()
    images = _digits(2)[0]
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        model.inpaint(images, torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="mask must broadcast"):
        model.inpaint(images, torch.ones(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="x must have shape"):
        model.inpaint(images[:, :, :4], torch.ones(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="sampler must be 'ddim' or 'ddpm'"):
        model.inpaint(images, torch.ones(1, 1, 8, 8, dtype=torch.bool), sampler="dpm_solver", resample=2)


# -- DDIM inversion -------------------------------------------------------------------------
def test_encode_decode_round_trip():
    """decode(encode(x)) ~ x for a (randomly perturbed, untrained) model: DDIM's eta = 0 update is
    invertible up to the change of the model output between neighbouring steps. Tolerance: max
    error 0.05 in [0, 1] pixel units with 50 steps (measured ~1e-3)."""
    model = _model(conditioning="none")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    images = _digits(4)[0]
    z = model.encode(images, steps=50)
    assert z.shape == images.shape and torch.isfinite(z).all()
    back = model.decode(z, steps=50)
    assert (back - images).abs().max() < 0.05
    assert z.std() > 0.5  # the latents are noise-like, not the images


# -- conditioning variants ------------------------------------------------------------------
def test_caption_conditioning_samples_from_captions():
    model = _model(conditioning="caption", text_dim=16, text_depth=1)
    assert model.text_encoder is not None
    out = model.sample(3, steps=3, sampler="ddim", caption="three", seed=0)
    assert out.shape == (3, 1, 8, 8)
    out = model.sample(2, steps=3, sampler="ddim", caption=["a handwritten seven", "7"], guidance_scale=2.0, seed=0)
    assert out.shape == (2, 1, 8, 8)
    with pytest.raises(TypeError, match="caption must be a str"):
        model.sample(2, caption=[3])
    with pytest.raises(ValueError, match="labels was given"):
        model.sample(2, labels=3)


def test_superres_samples_from_low_res_images():
    model = _model(conditioning="superres", superres_factor=2)
    images = _digits(3)[0]
    low = model.downsample(images)
    assert low.shape == (3, 1, 4, 4)
    out = model.sample(3, steps=3, sampler="ddim", low_res=low, seed=0)
    assert out.shape == (3, 1, 8, 8)
    assert model.sample(2, steps=2, sampler="ddim", low_res="digits").shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="pass low_res"):
        model.sample(2)
    with pytest.raises(ValueError, match="one image per sample"):
        model.sample(2, low_res=low)
    with pytest.raises(ValueError, match="shape"):
        model.sample(3, low_res=images)
    metrics = model.evaluate(DigitsDataset("val"), max_items=4)
    assert set(metrics) == {"psnr_db", "bicubic_psnr_db"}
    assert model.sample(2, steps=2, sampler="ddim").shape == (2, 1, 8, 8)  # now from the kept images
    assert {"samples", "superres"} <= set(model.figures(out))


# -- evaluate and figures -------------------------------------------------------------------
def test_evaluate_and_figures_on_digits():
    model = _model(sample_steps=2, sampler="ddim")
    metrics = model.evaluate(DigitsDataset("val"), max_items=12)
    assert set(metrics) == {"class_accuracy", "frechet_distance", "class_accuracy_guidance1",
                            "frechet_distance_guidance1"}
    assert all(v == v for v in metrics.values())
    figures = model.figures(model.sample(4, steps=2, sampler="ddim"))
    assert {"samples", "guidance_1", "guidance_3", "guidance_5", "inpainting"} <= set(figures)


def test_sample_conditions_list_every_keyword():
    assert Diffusion.sample_conditions() == ["steps", "sampler", "guidance_scale", "labels", "caption", "low_res",
                                             "seed", "eta"]


# -- behaviour: a short training run on the swiss roll --------------------------------------
def test_training_on_the_swiss_roll_lowers_the_mmd():
    """300 AdamW steps of a tiny MLP denoiser (fixed seed, ~3 s on one thread): the MMD of 500
    samples (20 DDIM steps) to held-out points drops below the untrained model's (measured ~0.018
    -> ~0.004)."""
    from genkernels.metrics import mmd

    torch.manual_seed(0)
    train = get_dataset("swissroll", "train", n=2000)
    held_out = get_dataset("swissroll", "test", n=500).points
    model = Diffusion(Diffusion.config_for_data(train, {"hidden": 64, "depth": 2, "sample_steps": 20,
                                                        "sampler": "ddim"}))
    before = mmd(model.eval().sample(500, seed=0), held_out)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = model.loss(train.points[torch.randint(0, len(train), (256,), generator=generator)])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = mmd(model.eval().sample(500, seed=0), held_out)
    assert after < 0.5 * before, (before, after)
    assert model.evaluate(get_dataset("swissroll", "val", n=300))["mmd"] < before
    assert set(model.figures(model.sample(64, seed=0))) == {"samples", "samples_2000"}  # scatter plots

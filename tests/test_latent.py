"""genkernels.latent: encode/decode per family, interpolation endpoints, slerp, attribute vectors,
augment and the augmentation-gain protocol (tiny untrained models, fixed seeds)."""
import math

import pytest
import torch

from genkernels import latent
from genkernels.data.digits import load_digits_tensors
from genkernels.models.diffusion import Diffusion, DiffusionConfig
from genkernels.models.gan import GAN, GANConfig
from genkernels.models.glow import Glow, GlowConfig
from genkernels.models.maf import MAF, MAFConfig
from genkernels.models.pixelcnn import PixelCNN, PixelCNNConfig
from genkernels.models.realnvp import RealNVP, RealNVPConfig
from genkernels.models.vae import VAE, VAEConfig
from genkernels.models.vqvae import VQVAE, VQVAEConfig


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits_tensors("test", "float")
    return x[:8], y[:8]


def _perturbed(model, scale=0.05, seed=0):
    """Random weights on top of the init (zero-initialised last layers would make flows near identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model.eval()


def _tiny_diffusion(**kw):
    torch.manual_seed(0)
    return Diffusion(DiffusionConfig(base_channels=8, num_groups=4, channel_mults=(1,), attention_resolutions=(),
                                     num_steps=200, sample_steps=2, **kw))


# -- flows: exact -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family, config", [
    (RealNVP, RealNVPConfig(hidden_channels=8, checkerboard_couplings=1, channel_couplings=1, final_couplings=2)),
    (Glow, GlowConfig()),
    (MAF, MAFConfig(data_shape=(1, 8, 8), num_levels=17, hidden=32)),
    (RealNVP, RealNVPConfig(hidden_channels=8, checkerboard_couplings=1, channel_couplings=1, final_couplings=2,
                            num_classes=10)),
])
@pytest.mark.parametrize("method", ["slerp", "linear"])
def test_flow_interpolation_endpoints_are_the_inputs(digits, family, config, method):
    torch.manual_seed(0)
    model = _perturbed(family(config))
    x, y = digits
    kw = {"labels": 3} if config.num_classes else {}
    path = latent.interpolate(model, x[0], x[1], steps=5, method=method, **kw)
    assert path.shape == (5, 1, 8, 8)
    assert (path[0] - x[0]).abs().max() < 1e-4 and (path[-1] - x[1]).abs().max() < 1e-4
    assert (path[2] - x[0]).abs().max() > 1e-2  # the middle is somewhere else
    z = latent.encode(model, x, labels=y if config.num_classes else None)
    assert z.shape == (8, 64)
    assert (latent.decode(model, z, labels=y if config.num_classes else None) - x).abs().max() < 1e-4


def test_flow_points_round_trip():
    torch.manual_seed(0)
    model = _perturbed(RealNVP(RealNVPConfig(data_shape=(2,), num_levels=0, num_couplings=4, hidden_channels=16)))
    x = torch.randn(6, 2)
    assert torch.allclose(latent.decode(model, latent.encode(model, x)), x, atol=1e-5)


# -- VAE: its reconstructions -----------------------------------------------------------------------
def test_vae_endpoints_are_its_reconstructions(digits):
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden=32, latent_dim=4)).eval()
    x, _ = digits
    path = latent.interpolate(model, x[0], x[1], steps=4)
    recon = model.reconstruct(x[:2])
    assert torch.allclose(path[0], recon[0], atol=1e-6) and torch.allclose(path[-1], recon[1], atol=1e-6)
    assert latent.encode(model, x).shape == (8, 4)
    # the VAE's own (linear) interpolate agrees with method="linear"
    assert torch.allclose(latent.interpolate(model, x[0], x[1], 4, "linear"), model.interpolate(x[:1], x[1:2], 4)[0],
                          atol=1e-5)


# -- diffusion: DDIM inversion ----------------------------------------------------------------------
def test_ddim_inversion_round_trip_within_tolerance(digits):
    # untrained UNet with random weights, T = 200: mean |decode(encode(x)) - x| measured 0.035 at 10
    # DDIM steps, 0.009 at 50 (max 0.17 / 0.05): the error falls with the steps (O(step) per step)
    model = _perturbed(_tiny_diffusion())
    x, _ = digits
    x = x[:4]
    errors = {}
    for steps in (10, 50):
        z = latent.encode(model, x, steps=steps)
        assert z.shape == x.shape
        errors[steps] = (latent.decode(model, z, steps=steps) - x).abs()
    assert errors[50].mean() < 0.02 and errors[50].max() < 0.1
    assert errors[50].mean() < errors[10].mean() / 2
    path = latent.interpolate(model, x[0], x[1], steps=3, ddim_steps=50)
    assert (path[0] - x[0]).abs().mean() < 0.02 and (path[-1] - x[1]).abs().mean() < 0.02


def test_class_diffusion_encodes_unconditionally_or_with_labels(digits):
    model = _perturbed(_tiny_diffusion(conditioning="class", num_classes=10))
    x, y = digits
    z_null = latent.encode(model, x[:2], steps=4)
    z_lab = latent.encode(model, x[:2], steps=4, labels=y[:2])
    assert z_null.shape == z_lab.shape == (2, 1, 8, 8) and not torch.allclose(z_null, z_lab)


# -- GAN: latent codes and inversion ----------------------------------------------------------------
def test_gan_latent_interpolation_and_inversion(digits):
    torch.manual_seed(0)
    model = GAN(GANConfig(channels=8)).eval()
    za, zb = torch.randn(32), torch.randn(32)
    path = latent.interpolate(model, za, zb, steps=5, from_latents=True)
    ends = latent.decode(model, torch.stack([za, zb]))
    assert path.shape == (5, 1, 8, 8) and torch.allclose(path[0], ends[0]) and torch.allclose(path[-1], ends[1])
    x, _ = digits
    start = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    before = (latent.decode(model, start) - x[:2]).pow(2).mean()
    z = latent.encode(model, x[:2], gan_steps=60, gan_lr=0.05, seed=0)
    after = (latent.decode(model, z) - x[:2]).pow(2).mean()
    assert z.shape == (2, 32) and after < before  # latent optimisation lowers the reconstruction error


# -- VQ-VAE: the continuous encoder output, snapped to codes on decoding ----------------------------
def test_vqvae_latents_decode_through_the_codebook(digits):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(image_shape=(1, 8, 8), channels=(8, 8, 8))).eval()
    x, _ = digits
    z = latent.encode(model, x[:3])
    assert z.shape == (3, model.config.code_dim, *model.config.code_shape) and z.is_floating_point()
    recon = model.reconstruct(x[:3])
    assert torch.equal(latent.decode(model, z), recon)  # nearest code per position = VQVAE.encode
    assert torch.equal(latent.decode(model, model.encode(x[:3])), recon)  # integer code maps work too
    path = latent.interpolate(model, x[0], x[1], steps=4, method="linear")
    assert path.shape == (4, 1, 8, 8) and torch.equal(path[0], recon[0]) and torch.equal(path[-1], recon[1])
    with pytest.raises(ValueError, match="z must have shape"):
        latent.decode(model, torch.zeros(1, 3, 2, 2))


# -- class interpolation: the class embedding moves, the latent stays --------------------------------
def test_gan_class_interpolation_endpoints_are_the_two_classes():
    torch.manual_seed(0)
    model = GAN(GANConfig(channels=8, num_classes=10)).eval()
    z = torch.randn(32)
    row = latent.class_interpolation(model, 3, 8, steps=5, z=z)
    with torch.no_grad():
        ends = (model.generator(z.expand(2, -1), torch.tensor([3, 8])) + 1) / 2
    assert row.shape == (5, 1, 8, 8)
    torch.testing.assert_close(row[0], ends[0].clamp(0, 1))
    torch.testing.assert_close(row[-1], ends[1].clamp(0, 1))
    assert not torch.allclose(row[1], row[0]) and not torch.allclose(row[1], row[-1])


def test_diffusion_class_interpolation_in_chunks_matches_plain_decoding():
    model = _perturbed(_tiny_diffusion(conditioning="class", num_classes=4))
    x_T = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(1))
    row = latent.class_interpolation(model, 1, 2, steps=6, z=x_T, ddim_steps=3)  # 6 > 4 classes: two passes
    ends = model.decode(x_T.expand(2, 1, 8, 8), steps=3, labels=[1, 2])
    assert row.shape == (6, 1, 8, 8)
    torch.testing.assert_close(row[0], ends[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(row[-1], ends[1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="b must be a class"):
        latent.class_interpolation(model, 0, 4)
    with pytest.raises(TypeError, match="class-conditional"):
        latent.class_interpolation(_tiny_diffusion(), 0, 1)


# -- slerp ------------------------------------------------------------------------------------------
def test_slerp_math():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    b = b * a.norm() / b.norm()  # equal norms: slerp stays on the sphere
    t = torch.linspace(0, 1, 9)
    path = latent.slerp(a, b, t)
    assert path.shape == (9, 3, 5)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.flatten(1).norm(dim=1), a.norm().expand(9), rtol=1e-10)
    linear = latent.lerp(a, b, t.double())
    assert (linear[4].norm() < a.norm() - 1e-3) and torch.allclose(linear[4], (a + b) / 2)
    # orthogonal unit vectors: the midpoint is (a + b) / sqrt 2 and the angle moves uniformly
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(latent.slerp(e1, e2, 0.5), (e1 + e2) / math.sqrt(2))
    assert torch.allclose(latent.slerp(e1, e2, 1 / 3), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    # parallel vectors: the arc is undefined, the line is used
    assert torch.allclose(latent.slerp(e1, 3 * e1, 0.5), 2 * e1)
    with pytest.raises(ValueError, match="one shape"):
        latent.slerp(e1, torch.zeros(3), 0.5)


# -- attribute vectors ------------------------------------------------------------------------------
class LinearAutoencoder:
    """A known toy encoder: z = W x (flattened), decode = pseudo-inverse."""

    def __init__(self):
        self.weight = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))

    def encode(self, x):
        return x.flatten(1) @ self.weight.T

    def decode(self, z):
        return (z @ torch.linalg.pinv(self.weight).T).view(-1, 1, 8, 8)


def test_attribute_vector_is_the_class_mean_difference(digits):
    x, y = load_digits_tensors("train", "float")
    x, y = x[:200], y[:200]
    model = LinearAutoencoder()
    vector = latent.attribute_vector(model, (x, y), None, 7, 1)
    z = model.encode(x)
    expected = z[y == 7].mean(0) - z[y == 1].mean(0)
    assert torch.allclose(vector, expected, atol=1e-4)
    # a callable attribute, and a tensor of values
    thick = latent.attribute_vector(model, x, latent.ink_attribute, 1, 0)
    groups = latent.ink_attribute(x)
    assert torch.allclose(thick, z[groups == 1].mean(0) - z[groups == 0].mean(0), atol=1e-4)
    assert torch.allclose(latent.attribute_vector(model, x, groups, 1, 0), thick)
    # arithmetic: scale s moves the code by s * vector
    out = latent.apply_attribute(model, x[:3], vector, scales=(0.0, 1.0))
    assert out.shape == (3, 2, 1, 8, 8)
    assert torch.allclose(model.encode(out[:, 1]) - model.encode(out[:, 0]), vector.expand(3, 4), atol=1e-3)


def test_attribute_vector_on_a_conditional_flow_holds_the_labels(digits):
    torch.manual_seed(0)
    model = _perturbed(RealNVP(RealNVPConfig(hidden_channels=8, checkerboard_couplings=1, channel_couplings=1,
                                             final_couplings=2, num_classes=10)))
    x, y = load_digits_tensors("train", "float")
    x, y = x[:60], y[:60]
    vector = latent.attribute_vector(model, (x, y), latent.ink_attribute, 1, 0)
    z = latent.encode(model, x, labels=y)
    groups = latent.ink_attribute(x)
    assert torch.allclose(vector, z[groups == 1].mean(0) - z[groups == 0].mean(0), atol=1e-4)
    test_x, test_y = digits
    out = latent.apply_attribute(model, test_x[:2], vector, scales=(0.0, 1.0), labels=test_y[:2])
    assert out.shape == (2, 2, 1, 8, 8) and (out[:, 0] - test_x[:2]).abs().max() < 1e-4  # s = 0: the input
    with pytest.raises(ValueError, match="class labels"):
        latent.attribute_vector(model, x, latent.ink_attribute, 1, 0)


# -- augment ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, kw", [
    (lambda: GAN(GANConfig(channels=8, num_classes=10)), {}),
    (lambda: PixelCNN(PixelCNNConfig(channels=8, num_layers=2, num_classes=10, likelihood="categorical")), {}),
    (lambda: RealNVP(RealNVPConfig(hidden_channels=8, checkerboard_couplings=1, channel_couplings=1,
                                   final_couplings=2, num_classes=10)), {}),
    (lambda: _tiny_diffusion(conditioning="class", num_classes=10), {"steps": 2}),
])
def test_augment_is_balanced_and_seeded(make, kw):
    torch.manual_seed(0)
    model = make()
    images, labels = latent.augment(model, 3, seed=1, batch_size=16, **kw)
    assert images.shape == (30, 1, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert images.min() >= 0 and images.max() <= 1
    again, _ = latent.augment(model, 3, seed=1, batch_size=16, **kw)
    assert torch.equal(images, again)


def test_augmentation_gain_runs_end_to_end():
    torch.manual_seed(0)
    models = {"gan": GAN(GANConfig(channels=8, num_classes=10))}
    rows = latent.augmentation_gain(models, real_per_class=(2,), seeds=(0, 1), synth_per_class=2, steps=3)
    assert [(r["real_per_class"], r["source"], r["synthetic_per_class"]) for r in rows] == [
        (2, "real only", 0), (2, "gan", 2)]
    for row in rows:
        assert len(row["accuracies"]) == 2 and 0 <= row["accuracy_mean"] <= 1 and row["accuracy_std"] >= 0
    table = latent.format_gain_table(rows)
    assert "real only" in table and "±" in table


# -- bad input --------------------------------------------------------------------------------------
def test_bad_input_errors(digits):
    x, _ = digits
    pixelcnn = PixelCNN(PixelCNNConfig(channels=8, num_layers=2))
    with pytest.raises(TypeError, match="VAE, GAN, RealNVP, Glow, MAF, Diffusion"):
        latent.encode(pixelcnn, x)
    with pytest.raises(TypeError, match="no latent space"):
        latent.interpolate(pixelcnn, x[0], x[1])
    vae = VAE(VAEConfig(hidden=16, latent_dim=2))
    with pytest.raises(TypeError, match="class-conditional"):
        latent.augment(vae, 2)
    with pytest.raises(ValueError, match="method"):
        latent.interpolate(vae, x[0], x[1], method="cubic")
    with pytest.raises(ValueError, match="steps"):
        latent.interpolate(vae, x[0], x[1], steps=1)
    with pytest.raises(ValueError, match="not class-conditional"):
        latent.encode(vae, x, labels=3)
    flow = RealNVP(RealNVPConfig(hidden_channels=8, num_classes=10))
    with pytest.raises(ValueError, match="pass labels"):
        latent.encode(flow, x)
    with pytest.raises(ValueError, match="must both occur"):
        latent.attribute_vector(vae, load_digits_tensors("test", "float"), None, 3, 11)
    with pytest.raises(TypeError, match="tensor"):
        latent.encode(vae, [1, 2, 3])
    with pytest.raises(ValueError, match="latent shape"):
        latent.apply_attribute(vae, x, torch.zeros(5))
    with pytest.raises(TypeError, match="10 classes"):
        latent.augmentation_gain({"vae": vae}, real_per_class=(1,), seeds=(0,), synth_per_class=1, steps=1)

"""The model protocol: layering (models never import the training package), fitting a family to
its data, the default figures and the sampling keywords the CLI offers."""
import subprocess
import sys

import pytest
import torch

from genkernels.data import get_dataset
from genkernels.models import REGISTRY, get_model_class
from genkernels.models.base import GenerativeModel
from genkernels.models.gan import GAN
from genkernels.models.vae import VAE


def test_models_never_import_the_training_package():
    """genkernels.train imports the models; a model importing train would be a hidden cycle."""
    code = ("import sys, pkgutil, importlib, genkernels.models as m\n"
            "names = [info.name for info in pkgutil.iter_modules(m.__path__)]\n"
            "for name in names:\n"
            "    importlib.import_module('genkernels.models.' + name)\n"
            "bad = sorted(k for k in sys.modules if k == 'genkernels.train' or k.startswith('genkernels.train.'))\n"
            "assert not bad, bad\n"
            "print(' '.join(names))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"base", "vae", "gan"} <= set(result.stdout.split())


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_image_families_fit_themselves_to_the_data(name):
    model_class = get_model_class(name)
    digits = get_dataset("digits", "train")
    config = model_class.config_for_data(digits, {"latent_dim": 4})
    assert config.image_shape == (1, 8, 8) and config.latent_dim == 4
    if name == "vae":
        assert config.num_levels == 17
        assert model_class.config_for_data(digits, {"num_levels": 9}).num_levels == 9  # the user wins
    with pytest.raises(ValueError, match=f"{name} trains on images, but data 'moons' is points"):
        model_class.config_for_data(get_dataset("moons", "train"), {}, data_name="moons")
    with pytest.raises(TypeError, match="latent_dim must be an int"):
        model_class.config_for_data(digits, {"latent_dim": 2.5})


def test_a_model_refuses_data_of_another_shape():
    model = VAE(VAE.config_for_data(get_dataset("digits", "train"), {"latent_dim": 4}))
    model.check_dataset(get_dataset("digits", "val"))

    class Wide(torch.utils.data.Dataset):
        kind = "image"

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 16, 16)

    with pytest.raises(ValueError, match="shape \\(3, 16, 16\\), but this vae model was built for \\(1, 8, 8\\)"):
        model.check_dataset(Wide(), "photos")


def test_default_figures_and_conditions():
    class Points(GenerativeModel):
        name = "points"

        def sample(self, n, temperature=1.0, *, steps=10):
            return torch.zeros(n, 2)

    assert Points.sample_conditions() == ["temperature", "steps"]
    assert Points(None).figures(torch.zeros(4, 2)) == {}  # not images: nothing drawn by default
    grid = Points(None).figures(torch.rand(4, 1, 8, 8))["samples"]
    assert grid.width >= 512
    assert GAN.sample_conditions() == ["labels"] and VAE.sample_conditions() == ["mode", "temperature"]
    # any-data families accept any kind; image families name theirs
    assert GenerativeModel.data_kinds == () and "image" in VAE.data_kinds
    assert set(REGISTRY) >= {"vae", "gan"}

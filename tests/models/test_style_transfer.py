"""Neural style transfer: Gatys optimisation lowers the style loss and keeps the content loss
bounded (fixed seed, small image, a few steps); the fast network's training lowers its loss; the
extractor adapter on a user module; `genkernels stylize` and `genkernels train style` end to end
on tiny images; bad input fails with one line naming it."""
import json

import pytest
import torch
from torch import nn

from genkernels.cli import main
from genkernels.models import REGISTRY, StyleTransfer
from genkernels.models.style_transfer import (
    StyleTransferConfig,
    load_image,
    sample_photos,
    save_image,
    stylize,
)
from genkernels.nn.style import HookedFeatureExtractor, RandomFeatureExtractor, TransformerNet

TINY = {"net_channels": 4, "residual_blocks": 1, "extractor_channels": (8, 16, 16, 16), "style_size": 32}


@pytest.fixture(scope="module")
def photos():
    return sample_photos(32)  # {"china": (1, 3, 21, 32), "flower": (1, 3, 21, 32)}


@pytest.mark.parametrize("optimizer, steps", [("adam", 15), ("lbfgs", 5)])
def test_stylize_lowers_style_loss_and_bounds_content(photos, optimizer, steps):
    result = stylize(photos["china"], photos["flower"], steps=steps, size=32, optimizer=optimizer, seed=0)
    first, last = result.history[0], result.history[-1]
    assert result.image.shape == (3, 21, 32) and 0 <= result.image.min() and result.image.max() <= 1
    assert len(result.history) == steps + 1 and first["content"] == 0.0  # starts at the content image
    assert last["style"] < 0.4 * first["style"]  # measured 0.54 -> 0.08 (adam), 0.54 -> 0.17 (lbfgs)
    assert last["content"] < 1.0  # relative feature MSE: the content stays recognisable
    assert last["loss"] < first["loss"]


def test_stylize_from_noise_and_with_files(photos, tmp_path):
    save_image(photos["china"], tmp_path / "c.png")
    save_image(photos["flower"], tmp_path / "s.png")
    result = stylize(tmp_path / "c.png", str(tmp_path / "s.png"), steps=3, size=16, init="noise")
    assert result.image.shape == (3, 10, 16)  # 21 x 32 -> 10.5 rounds to even
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_random_extractor_is_seeded_and_multiscale():
    a, b = RandomFeatureExtractor(seed=1), RandomFeatureExtractor(seed=1)
    x = torch.rand(2, 3, 20, 24)
    fa, fb = a(x), b(x)
    assert [tuple(f.shape) for f in fa.values()] == [(2, 32, 20, 24), (2, 64, 10, 12), (2, 128, 5, 6), (2, 256, 3, 3)]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not torch.equal(RandomFeatureExtractor(seed=2)(x)["relu1_1"], fa["relu1_1"])
    assert list(RandomFeatureExtractor(layers=["relu2_1"])(x)) == ["relu2_1"]
    assert not any(p.requires_grad for p in a.parameters())


class _UserNet(nn.Module):
    """Stands in for a torchvision VGG: named submodules, in-place ReLUs, a head that must not run."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(1, 1)

    def forward(self, x):
        x = self.features(x)
        raise AssertionError("the extractor should have stopped before the head")


def test_hooked_extractor_on_a_user_module(photos):
    net = _UserNet()
    extractor = HookedFeatureExtractor(net, ["features.0", "features.3"], mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    x = torch.rand(2, 3, 8, 8)
    features = extractor(x)
    conv0 = net.features[0]((x - 0.5) / 0.25)
    torch.testing.assert_close(features["features.0"], conv0)  # not overwritten by the (formerly) in-place ReLU
    assert features["features.3"].shape == (2, 8, 8, 8) and (features["features.3"] >= 0).all()
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert not net.features[0]._forward_hooks  # hooks live only during a call
    result = stylize(photos["china"], photos["flower"], steps=4, size=16, extractor=extractor,
                     style_layers=["features.0", "features.3"], content_layers=["features.3"])
    assert result.history[-1]["style"] < result.history[0]["style"]
    model = StyleTransfer(StyleTransferConfig(image_shape=(3, 16, 16), style_layers=("features.1",),
                                              content_layers=("features.3",), **{k: v for k, v in TINY.items()
                                                                                if k != "extractor_channels"}),
                          extractor=HookedFeatureExtractor(_UserNet(), ["features.1", "features.3"]))
    model.set_style(photos["flower"])
    assert model.style_gram_0.shape == (6, 6)
    assert torch.isfinite(model.loss(torch.rand(2, 3, 16, 16))["loss"])
    with pytest.raises(ValueError, match="layers must name submodules"):
        HookedFeatureExtractor(_UserNet(), ["features.9"])
    with pytest.raises(ValueError, match="not among the extractor's outputs"):
        stylize(photos["china"], photos["flower"], steps=1, size=16, extractor=extractor)


def test_fast_network_training_lowers_the_loss(photos):
    torch.manual_seed(0)
    model = StyleTransfer(StyleTransferConfig(image_shape=(3, 24, 24), **TINY))
    model.set_style(photos["flower"])
    assert REGISTRY["style"].endswith(":StyleTransfer") and model.name == "style"
    crops = torch.cat([photos["china"][..., i:i + 16, 2 * i:2 * i + 24] for i in range(4)])  # (4, 3, 16, 24)
    crops = torch.nn.functional.interpolate(crops, size=(24, 24), mode="bilinear")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(crops)
    assert first["content"] == 0  # the untrained network is the identity
    for _ in range(20):
        opt.zero_grad()
        model.loss(crops)["loss"].backward()
        opt.step()
    last = model.loss(crops)
    assert last["loss"] < 0.75 * first["loss"]  # measured 6.19 -> 4.02 in 20 steps
    assert last["style"] < first["style"]
    images = model.sample(3)
    assert images.shape == (3, 3, 24, 24) and 0 <= images.min() and images.max() <= 1
    assert model.sample(1, content=torch.rand(1, 3, 13, 17)).shape == (1, 3, 13, 17)  # any size
    # a checkpoint needs no style file: the Gram targets are buffers
    state = model.state_dict()
    restored = StyleTransfer.from_config_dict({**model.config_dict(), "style_image": "/no/such/file.png"})
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.sample(2), model.sample(2))


def test_model_reads_its_style_file_and_runs_gatys(photos, tmp_path):
    save_image(photos["flower"], tmp_path / "style.png")
    save_image(photos["china"], tmp_path / "content.png")
    model = StyleTransfer(StyleTransferConfig(image_shape=(3, 16, 16), style_image=str(tmp_path / "style.png"),
                                              **TINY))
    assert model.style_gram_0.abs().sum() > 0  # read at construction
    result = model.stylize(tmp_path / "content.png", steps=3, size=16)
    assert result.image.shape == (3, 10, 16) and result.history[-1]["style"] < result.history[0]["style"]
    assert model.sample(2, content=str(tmp_path / "content.png")).shape == (2, 3, 10, 16)
    with pytest.raises(ValueError, match="style_image: no image file"):
        StyleTransfer(StyleTransferConfig(style_image=str(tmp_path / "missing.png"), **TINY))


def test_transformer_net_keeps_odd_sizes():
    net = TransformerNet(4, 1)
    x = torch.rand(1, 3, 18, 23)
    torch.testing.assert_close(net(x), x)  # identity at initialisation
    assert net(x).shape == x.shape


def _image_folder(path, photos, count=20, side=16):
    path.mkdir()
    china = photos["china"]
    for i in range(count):
        save_image(china[..., i % 5:i % 5 + side, i % 16:i % 16 + side], path / f"{i:02d}.png")
    return path


def test_cli_stylize_and_train_style(photos, tmp_path, capsys):
    save_image(photos["china"], tmp_path / "content.png")
    save_image(photos["flower"], tmp_path / "style.png")
    out = tmp_path / "out" / "result.png"
    code = main(["stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png"), "--out", str(out),
                 "--size", "24", "--steps", "3", "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "style loss" in captured.out and load_image(out).shape == (1, 3, 16, 24)

    data = _image_folder(tmp_path / "photos", photos)
    run = tmp_path / "run"
    options = [f"--set={k}={v}" for k, v in TINY.items()]
    code = main(["train", "style", "--data", str(data), "--set", f"style_image={tmp_path / 'style.png'}", *options,
                 "--steps", "3", "--batch-size", "4", "--out", str(run), "--no-progress", "--device", "cpu",
                 "--eval-every", "0", "--checkpoint-every", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((run / "metrics.json").read_text())["step"] == 3
    code = main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "s" / "samples.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["stylize", "{tmp}/missing.png", "{tmp}/style.png"], "content: no image file at"),
    (["stylize", "{tmp}/content.png", "{tmp}/notes.txt"], "style: cannot read"),
    (["stylize", "{tmp}/content.png", "{tmp}/style.png", "--out", "{tmp}/x.unknown"], "--out: cannot write"),
    (["stylize", "{tmp}/content.png", "{tmp}/style.png", "--steps", "0"], "--steps: must be >= 1"),
    (["train", "style", "--data", "{tmp}/photos", "--steps", "1"], "style needs a style image"),
    (["train", "style", "--set", "style_image={tmp}/style.png", "--steps", "1"], "style trains on RGB photos"),
])
def test_bad_input_fails_in_one_line(photos, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # default outputs (stylized.png, runs/style) land here
    save_image(photos["china"], tmp_path / "content.png")
    save_image(photos["flower"], tmp_path / "style.png")
    (tmp_path / "notes.txt").write_text("not an image")
    _image_folder(tmp_path / "photos", photos)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "stylized.png").exists() and not (tmp_path / "runs").exists()


def test_errors_name_the_argument(photos):
    with pytest.raises(TypeError, match="content: expected a path"):
        stylize(3, photos["flower"])
    with pytest.raises(ValueError, match="optimizer must be"):
        stylize(photos["china"], photos["flower"], optimizer="sgd")
    with pytest.raises(ValueError, match="style_weight must be a float >= 0"):
        stylize(photos["china"], photos["flower"], style_weight=-1.0)
    with pytest.raises(ValueError, match=r"image_shape must be \(3, H, W\)"):
        StyleTransferConfig(image_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="a tensor image must be"):
        load_image(torch.rand(4, 8, 8))


def test_bench_suite_runs_tiny():
    """`genkernels bench --suite style` on tiny sizes: rows for every provider, the fused op checked first."""
    from genkernels.bench import style

    rows = style.gram_rows(torch.device("cpu"), with_compile=False, shapes=[(2, 4, 8, 8)])
    assert [r["provider"] for r in rows] == ["eager", "fused"] and all(r["ms"] > 0 for r in rows)
    assert rows[1]["saved_MiB"] > 0
    rows = style.stylize_rows(torch.device("cpu"), size=16, steps=1)
    assert [r["case"].split()[0] for r in rows] == ["gatys", "fast", "fast"]

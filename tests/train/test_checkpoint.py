"""Checkpoints: exact resume, round trip, rebuilding models, clear errors, no pickle."""
import json
import pickle

import pytest
import torch

from genkernels.models import REGISTRY
from genkernels.train import load_checkpoint, load_model, save_checkpoint
from genkernels.train.checkpoint import _flatten_optimizer, _unflatten_optimizer
from tests.train.test_trainer import losses_only, make_trainer
from tests.train.toys import ToyAutoencoder, ToyConfig, ToyGAN


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", "tests.train.toys:ToyAutoencoder")
    monkeypatch.setitem(REGISTRY, "toygan", "tests.train.toys:ToyGAN")


@pytest.fixture
def saved(tmp_path):
    trainer = make_trainer(steps=6, eval_every=3)
    trainer.fit()
    return trainer, save_checkpoint(tmp_path / "ckpt", trainer)


def assert_same_state(a, b):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    if a.ema is not None:
        for name in a.ema.shadow:
            assert torch.equal(a.ema.shadow[name], b.ema.shadow[name]), name
    for group in a.optimizers:
        state_a, state_b = a.optimizers[group].state_dict()["state"], b.optimizers[group].state_dict()["state"]
        for index in state_a:
            for key in state_a[index]:
                assert torch.equal(state_a[index][key], state_b[index][key]), (group, index, key)


# -- resume == uninterrupted ---------------------------------------------------------------
@pytest.mark.parametrize("model_class, precision, workers", [(ToyAutoencoder, "fp32", 0),
                                                              (ToyGAN, "fp16", 0),
                                                              (ToyAutoencoder, "bf16", 2)])
def test_resume_continues_bitwise_like_an_uninterrupted_run(tmp_path, model_class, precision, workers):
    options = dict(steps=12, eval_every=3, log_every=3, precision=precision, num_workers=workers)
    uninterrupted = make_trainer(model_class, **options)
    full_history = uninterrupted.fit()

    first_half = make_trainer(model_class, **options)
    first_half.fit(stop_at=6)
    assert first_half.step == 6
    save_checkpoint(tmp_path / "ckpt", first_half)
    torch.manual_seed(123)  # the process RNG moves on; the checkpoint must carry it back
    resumed = make_trainer(model_class, model_seed=99, **options).resume(tmp_path / "ckpt")
    assert resumed.step == 6
    resumed_history = resumed.fit()

    assert losses_only(resumed_history) == losses_only(full_history)
    assert_same_state(resumed, uninterrupted)
    if precision == "fp16":
        assert resumed.scaler.get_scale() == uninterrupted.scaler.get_scale()


def test_resume_rewrites_the_log_from_the_checkpoint(tmp_path):
    trainer = make_trainer(steps=12, out_dir=str(tmp_path))
    trainer.fit(stop_at=6)
    save_checkpoint(tmp_path / "step6", trainer)
    trainer.fit()  # lines after step 6 that the resumed run must replace
    resumed = make_trainer(steps=12, out_dir=str(tmp_path)).resume(tmp_path / "step6")
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in lines) == 6
    assert lines == resumed.history


# -- round trip ----------------------------------------------------------------------------
def test_round_trip_keeps_every_piece(saved):
    trainer, path = saved
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 6
    assert checkpoint.model_name == "toy"
    assert checkpoint.model_config == {"side": 4, "hidden": 8, "noise": 0.1}
    assert checkpoint.train_config["steps"] == 6
    assert checkpoint.meta["history"] == trainer.history
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(checkpoint.model_state[name], value)
    for name, value in trainer.ema.shadow.items():
        assert torch.equal(checkpoint.ema_state[name], value)
    assert torch.equal(checkpoint.rng_tensors["rank0.torch_cpu"], torch.get_rng_state())
    assert sorted(p.name for p in path.iterdir()) == ["ema.safetensors", "model.safetensors",
                                                      "optimizer.safetensors", "rng.safetensors",
                                                      "trainer.json"]


def test_optimizer_state_flattens_and_comes_back():
    trainer = make_trainer(ToyGAN, steps=2, eval_every=0)
    trainer.fit()
    for group, optimizer in trainer.optimizers.items():
        state = optimizer.state_dict()
        tensors, index = _flatten_optimizer(group, state)
        assert all(isinstance(t, torch.Tensor) for t in tensors.values())
        back = _unflatten_optimizer(json.loads(json.dumps(index)), tensors)
        assert back["param_groups"] == state["param_groups"]
        for param_id, values in state["state"].items():
            for key, value in values.items():
                assert torch.equal(back["state"][param_id][key], value)


def test_load_model_rebuilds_with_ema_weights_by_default(saved, toy_registry):
    trainer, path = saved
    model = load_model(path)
    assert isinstance(model, ToyAutoencoder) and not model.training
    assert model.config == ToyConfig(noise=0.1)
    for name, p in model.named_parameters():
        assert torch.equal(p, trainer.ema.shadow[name])
    live = load_model(path.parent / "ckpt", ema=False)
    for (name, p), q in zip(live.named_parameters(), trainer.model.parameters()):
        assert torch.equal(p, q), name


def test_load_model_accepts_a_run_directory(tmp_path, toy_registry):
    make_trainer(steps=2, out_dir=str(tmp_path / "run")).fit()
    assert isinstance(load_model(tmp_path / "run"), ToyAutoencoder)


def test_load_model_of_an_unregistered_family_names_it(saved):
    with pytest.raises(ValueError, match="unknown model 'toy'"):
        load_model(saved[1])


# -- errors --------------------------------------------------------------------------------
def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors",
                                  "ema.safetensors"])
def test_truncated_file_is_named(saved, name):
    path = saved[1]
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{name}.*truncated"):
        load_checkpoint(path)


def test_corrupt_file_of_the_right_size_is_named(saved):
    path = saved[1]
    data = bytearray((path / "model.safetensors").read_bytes())
    data[8:16] = b"\xff" * 8  # garbage inside the JSON header
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(path)


def test_truncated_metadata_is_named(saved):
    path = saved[1]
    text = (path / "trainer.json").read_text()
    (path / "trainer.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="trainer.json.*not valid JSON"):
        load_checkpoint(path)


def test_missing_file_is_named(saved):
    path = saved[1]
    (path / "rng.safetensors").unlink()
    with pytest.raises(ValueError, match="rng.safetensors is missing"):
        load_checkpoint(path)


def test_foreign_checkpoints(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "trainer.json").write_text(json.dumps({"step": 3}))
    with pytest.raises(ValueError, match="not a genkernels checkpoint"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no trainer.json"):
        load_checkpoint(tmp_path / "empty")
    torch_file = tmp_path / "model.pt"
    torch_file.write_bytes(b"PK\x03\x04 a torch.save zip")
    with pytest.raises(ValueError, match="is a file"):
        load_checkpoint(torch_file)


def test_resuming_into_another_model_is_refused(saved):
    path = saved[1]
    with pytest.raises(ValueError, match="'toy' model, not 'toygan'"):
        make_trainer(ToyGAN).resume(path)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="model config differs"):
        from genkernels.train import TrainConfig, Trainer
        from tests.train.toys import ToyImages

        Trainer(ToyAutoencoder(ToyConfig(hidden=5)), ToyImages(8),
                config=TrainConfig(device="cpu", progress=False)).resume(path)


def _edit_model_config(path, **changes):
    meta = json.loads((path / "trainer.json").read_text())
    meta["model"]["config"].update(changes)
    (path / "trainer.json").write_text(json.dumps(meta))


def test_config_that_no_longer_matches_the_tensors_is_one_clear_error(saved, toy_registry):
    path = saved[1]
    _edit_model_config(path, hidden=5)
    shapes = r"tensor 'encoder.weight' has shape \(8, 16\) but the ToyAutoencoder it is loaded into has " \
             r"\(5, 16\) \(and 2 more tensors\); the model config in trainer.json no longer matches"
    for ema in (True, False):
        with pytest.raises(ValueError, match=rf"model.safetensors: {shapes}"):
            load_model(path, ema=ema)
    from genkernels.train import TrainConfig, Trainer
    from tests.train.toys import ToyImages

    resuming = Trainer(ToyAutoencoder(ToyConfig(hidden=5)), ToyImages(8),
                       config=TrainConfig(steps=6, device="cpu", progress=False))
    with pytest.raises(ValueError, match=rf"model.safetensors: {shapes}"):
        resuming.resume(path)


def test_missing_and_unexpected_tensors_are_named(saved, toy_registry):
    from safetensors.torch import load_file, save_file

    path = saved[1]
    for name in ("model.safetensors", "ema.safetensors"):
        tensors = load_file(str(path / name))
        tensors["encoder.biaz"] = tensors.pop("encoder.bias")  # same length: the file size still checks
        save_file(tensors, str(path / name))
    with pytest.raises(ValueError, match=r"model.safetensors does not match the ToyAutoencoder it is loaded "
                                         r"into: missing tensors \['encoder.bias'\], unexpected tensors "
                                         r"\['encoder.biaz'\]"):
        load_model(path)


def test_optimizer_moments_of_another_shape_are_named(saved):
    from safetensors.torch import load_file, save_file

    path = saved[1]
    tensors = load_file(str(path / "optimizer.safetensors"))
    tensors["model.0.exp_avg"] = tensors["model.0.exp_avg"].t().contiguous()  # (8, 16) -> (16, 8): same size
    save_file(tensors, str(path / "optimizer.safetensors"))
    with pytest.raises(ValueError, match=r"optimizer.safetensors: optimizer tensor 'model.0.exp_avg' has shape "
                                         r"\(16, 8\) but its parameter has \(8, 16\)"):
        make_trainer(steps=6, eval_every=3).resume(path)


def test_saving_never_overwrites_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    trainer = make_trainer(steps=1)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_checkpoint(tmp_path, trainer)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    save_checkpoint(tmp_path / "ckpt", trainer)
    save_checkpoint(tmp_path / "ckpt", trainer)  # a checkpoint may replace a checkpoint
    assert not (tmp_path / "ckpt.tmp").exists() and not (tmp_path / "ckpt.old").exists()


def test_loading_never_unpickles(saved, toy_registry, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    trainer, path = saved
    load_model(path)
    make_trainer(steps=6, eval_every=3).resume(path)

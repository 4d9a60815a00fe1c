"""Trainer: schedule, EMA, reproducibility, optimizer groups, precisions, logging."""
import json
import math

import pytest
import torch
from torch import nn

from genkernels.models.base import GenerativeModel
from genkernels.train import TrainConfig, Trainer
from genkernels.train.ema import EMA
from genkernels.train.trainer import lr_at
from tests.train.toys import ToyAutoencoder, ToyConfig, ToyGAN, ToyImages


def small_config(**overrides) -> TrainConfig:
    values = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=3, log_every=3, eval_every=4,
                  eval_max_items=16, checkpoint_every=0, progress=False, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def make_trainer(model_class=ToyAutoencoder, model_seed=0, train_size=40, noise=0.1, **overrides) -> Trainer:
    torch.manual_seed(model_seed)
    model = model_class(ToyConfig(noise=noise))
    return Trainer(model, ToyImages(train_size), ToyImages(16, seed=1), small_config(**overrides))


def losses_only(history) -> str:
    """History without wall-clock fields (throughput differs run to run), as exact JSON text.

    JSON keeps every float exactly (repr round-trips) and makes NaN equal to NaN: fp16 runs
    log NaN gradient norms while the GradScaler finds its scale.
    """
    return json.dumps([{k: v for k, v in entry.items() if k != "items_per_s"} for entry in history])


# -- learning-rate schedule ----------------------------------------------------------------
def test_lr_schedule_warmup_then_cosine_to_floor():
    config = TrainConfig(steps=110, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(1e-4)
    assert lr_at(4, config) == pytest.approx(5e-4)
    assert lr_at(9, config) == pytest.approx(1e-3)
    assert lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(60, config) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert lr_at(110, config) == pytest.approx(1e-4)
    assert lr_at(500, config) == pytest.approx(1e-4)  # clamped past the end
    decay = [lr_at(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_lr_schedule_without_warmup_starts_at_peak():
    config = TrainConfig(steps=10, warmup_steps=0, lr=2e-3, min_lr_ratio=0.0)
    assert lr_at(0, config) == pytest.approx(2e-3)
    assert lr_at(10, config) == pytest.approx(0.0, abs=1e-12)


def test_optimizer_uses_the_scheduled_lr():
    trainer = make_trainer()
    for step in range(4):
        trainer.train_step()
        assert trainer.optimizers["model"].param_groups[0]["lr"] == pytest.approx(trainer.lr_at(step))


# -- EMA -----------------------------------------------------------------------------------
def test_ema_follows_the_warmed_up_decay():
    weight = nn.Parameter(torch.tensor([1.0, -2.0]))
    module = nn.Module()
    module.weight = weight
    ema = EMA(module, decay=0.9)
    expected = weight.detach().clone()
    for n, value in enumerate([3.0, 0.5, -1.0, 2.0, 7.0]):
        with torch.no_grad():
            weight.fill_(value)
        ema.update()
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
        torch.testing.assert_close(ema.shadow["weight"], expected)
    assert ema.num_updates == 5


def test_ema_store_copy_to_restore():
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    ema = EMA(module, decay=0.5)
    live = {k: v.clone() for k, v in module.state_dict().items()}
    for name in ema.shadow:
        ema.shadow[name].add_(1.0)
    ema.store()
    ema.copy_to()
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.detach(), ema.shadow[name], rtol=0, atol=0)
    ema.restore()
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, live[name], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="store"):
        ema.restore()


def test_ema_averages_batch_norm_statistics_and_copies_counters():
    bn = nn.BatchNorm1d(2)
    ema = EMA(bn, decay=0.5)
    with torch.no_grad():
        bn.running_mean.fill_(4.0)
        bn.num_batches_tracked.fill_(7)
    ema.update()  # first update: decay min(0.5, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow["running_mean"], torch.full((2,), 0.9 * 4.0))
    assert int(ema.shadow["num_batches_tracked"]) == 7
    with ema.averaged():
        torch.testing.assert_close(bn.running_mean, torch.full((2,), 3.6))
    torch.testing.assert_close(bn.running_mean, torch.full((2,), 4.0))


def test_trainer_evaluates_and_samples_with_ema_weights_then_restores_live_ones():
    trainer = make_trainer(ema_decay=0.5)
    trainer.fit()
    live = [p.detach().clone() for p in trainer.model.parameters()]
    assert any(not torch.equal(trainer.ema.shadow[n], p) for n, p in trainer.model.named_parameters())
    seen = {}
    original = trainer.model.sample

    def spy(n, **conditions):
        seen["decoder"] = trainer.model.decoder.weight.detach().clone()
        return original(n, **conditions)

    trainer.model.sample = spy
    trainer.sample(4)
    torch.testing.assert_close(seen["decoder"], trainer.ema.shadow["decoder.weight"], rtol=0, atol=0)
    for before, p in zip(live, trainer.model.parameters()):
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=0)


# -- reproducibility -----------------------------------------------------------------------
def test_same_seed_gives_identical_losses_and_weights():
    # one after the other: the trainer seeds the process-wide RNGs when it is built
    first = make_trainer()
    history_a = first.fit()
    second = make_trainer()
    history_b = second.fit()
    assert losses_only(history_a) == losses_only(history_b)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_another_seed_gives_other_losses():
    history_a = make_trainer(seed=0).fit()
    history_b = make_trainer(seed=1).fit()
    assert losses_only(history_a) != losses_only(history_b)


def test_evaluation_and_sampling_do_not_change_training():
    train_a = [e for e in make_trainer(eval_every=0).fit() if e["kind"] == "train"]
    busy = make_trainer(eval_every=2, sample_every=3, num_samples=4)
    train_b = [e for e in busy.fit() if e["kind"] == "train"]
    assert losses_only(train_a) == losses_only(train_b)


def test_workers_fetch_the_same_batches_as_the_main_process():
    inline = make_trainer(num_workers=0, eval_every=0).fit()
    workers = make_trainer(num_workers=2, eval_every=0).fit()
    assert losses_only(inline) == losses_only(workers)


def test_batches_larger_than_the_dataset_straddle_epochs():
    trainer = make_trainer(train_size=5, batch_size=8, steps=3, eval_every=0)
    trainer.fit()
    assert trainer.batches.epoch == 4  # 24 items drawn from 5-item permutations
    assert trainer.step == 3


# -- history and files ---------------------------------------------------------------------
def test_history_and_metrics_jsonl(tmp_path):
    trainer = make_trainer(out_dir=str(tmp_path), sample_every=6, num_samples=4)
    history = trainer.fit()
    kinds = [(e["kind"], e["step"]) for e in history]
    assert kinds == [("train", 3), ("eval", 4), ("train", 6), ("eval", 8), ("train", 9),
                     ("train", 12), ("eval", 12)]
    train = history[0]
    assert {"lr", "train/loss", "train/l1", "grad_norm/model", "items_per_s"} <= set(train)
    assert {"val/loss", "val/l1", "eval/mean_abs_code"} <= set(history[1])
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == history
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000006.png", "step_000012.png"]
    assert (tmp_path / "checkpoint" / "trainer.json").exists()


@pytest.mark.parametrize("grad_clip", [1e-3, 0.0])
def test_grad_clip_bounds_the_norm_the_optimizer_sees(grad_clip):
    trainer = make_trainer(grad_clip=grad_clip)
    optimizer = trainer.optimizers["model"]
    seen = []
    original_step = optimizer.step

    def spy(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original_step(*args, **kwargs)

    optimizer.step = spy
    record = trainer.train_step()
    assert record["grad_norm/model"].item() > 1e-3  # the reported norm is the one before clipping
    if grad_clip:
        assert seen[0] == pytest.approx(grad_clip, rel=1e-4)
    else:
        assert seen[0] == pytest.approx(record["grad_norm/model"].item(), rel=1e-5)


# -- optimizer groups ----------------------------------------------------------------------
def test_multi_group_model_steps_each_group_in_order():
    trainer = make_trainer(ToyGAN, eval_every=0)
    assert list(trainer.optimizers) == ["discriminator", "generator"]
    calls = []
    original = trainer.model.loss

    def spy(batch, group):
        calls.append(group)
        return original(batch, group=group)

    trainer.model.loss = spy
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    record = trainer.train_step()
    assert calls == ["discriminator", "generator"]
    assert {"d_loss", "g_loss", "grad_norm/discriminator", "grad_norm/generator"} <= set(record)
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(before[name], p), name
    assert all(p.grad is None for p in trainer.model.parameters())


def test_default_optimizer_group_holds_every_trainable_parameter():
    model = ToyAutoencoder(ToyConfig())
    model.encoder.bias.requires_grad_(False)
    groups = model.optimizer_groups()
    assert list(groups) == ["model"]
    assert len(groups["model"]) == 3


def test_overlapping_groups_are_rejected():
    class Overlap(ToyGAN):
        def optimizer_groups(self):
            return {"a": list(self.parameters()), "b": list(self.generator.parameters())}

    with pytest.raises(ValueError, match="two optimizer groups"):
        make_trainer(Overlap)


# -- precision, compile --------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_trains_on_cpu(precision):
    reference = make_trainer(precision="fp32", eval_every=0).fit()
    trainer = make_trainer(precision=precision, eval_every=0)
    history = trainer.fit()
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    for low, full in zip(history[:-1], reference[:-1]):  # the last entry is the final evaluation
        assert low["kind"] == "train"
        assert math.isfinite(low["train/loss"])
        assert low["train/loss"] == pytest.approx(full["train/loss"], rel=0.05)


def test_compiled_loss_matches_eager():
    pytest.importorskip("torch._dynamo")
    # noise=0: compiled code draws random numbers from its own generator
    eager_history = make_trainer(eval_every=0, steps=3, log_every=1, noise=0.0).fit()
    compiled = make_trainer(eval_every=0, steps=3, log_every=1, noise=0.0, compile=True)
    try:
        compiled_history = compiled.fit()
    except Exception as error:  # no working C++ toolchain for inductor on this machine
        pytest.skip(f"torch.compile unavailable: {type(error).__name__}")
    assert [e["kind"] for e in compiled_history] == ["train"] * 3 + ["eval"]
    for a, b in zip(eager_history[:3], compiled_history[:3]):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5, abs=1e-6)


# -- validation of inputs ------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("precision", "fp8"), ("steps", 0), ("ema_decay", 1.0),
                                          ("betas", (0.9,)), ("min_lr_ratio", 2.0), ("log_every", -1)])
def test_bad_config_values_raise(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_bad_model_and_loss_raise():
    with pytest.raises(TypeError, match="GenerativeModel"):
        Trainer(nn.Linear(2, 2), ToyImages(8), config=small_config())

    class NoDict(ToyAutoencoder):
        def loss(self, batch):
            return super().loss(batch)["loss"]

    trainer = make_trainer(NoDict)
    with pytest.raises(TypeError, match="dict"):
        trainer.train_step()


def test_empty_train_set_and_bad_device_raise():
    with pytest.raises(ValueError, match="empty"):
        Trainer(ToyAutoencoder(ToyConfig()), ToyImages(0), config=small_config())
    with pytest.raises(ValueError, match="device"):
        Trainer(ToyAutoencoder(ToyConfig()), ToyImages(8), config=small_config(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Trainer(ToyAutoencoder(ToyConfig()), ToyImages(8), config=small_config(device="cuda"))


def test_base_protocol_defaults():
    assert GenerativeModel.train_defaults == {}
    assert ToyAutoencoder(ToyConfig()).evaluate(ToyImages(4)).keys() == {"mean_abs_code"}

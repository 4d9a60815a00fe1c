"""Trainer: schedule, EMA, reproducibility, optimizer groups, precisions, logging."""
import json
import math

import pytest
import torch
from torch import nn

from genkernels.models.base import GenerativeModel
from genkernels.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from genkernels.train import trainer as trainer_module
from genkernels.train.ema import EMA
from genkernels.train.trainer import NonFiniteError, lr_at
from tests.train.toys import FlakyAutoencoder, ToyAutoencoder, ToyConfig, ToyGAN, ToyImages


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


def test_ema_load_state_dict_refuses_a_broadcastable_shape():
    ema = EMA(nn.Linear(3, 2), decay=0.5)
    state = ema.state_dict()
    state["shadow"] = {**state["shadow"], "bias": torch.zeros(1)}  # copy_ would broadcast it
    with pytest.raises(ValueError, match=r"'bias' has shape \(1,\), the model's has \(2,\)"):
        ema.load_state_dict(state)


def test_fit_leaves_the_ema_of_the_live_weight_trajectory():
    """The shadow after fit() is the warmed-up EMA of the weights after each step, recomputed here
    from the recorded trajectory (not from the trainer's EMA), so a trainer that skipped, doubled
    or misordered EMA updates would fail."""
    trainer = make_trainer(ema_decay=0.7, eval_every=0)
    names = [n for n, _ in trainer.model.named_parameters()]
    expected = {n: p.detach().double().clone() for n, p in trainer.model.named_parameters()}
    trajectory = []
    original = trainer.train_step

    def recording_step():
        record = original()
        trajectory.append({n: p.detach().double().clone() for n, p in trainer.model.named_parameters()})
        return record

    trainer.train_step = recording_step
    trainer.fit()
    assert len(trajectory) == trainer.config.steps
    for n, weights in enumerate(trajectory):
        decay = min(0.7, (1 + n) / (10 + n))
        for name in names:
            expected[name] = decay * expected[name] + (1 - decay) * weights[name]
    for name in names:
        # the trajectory moved the weights: the test would not notice a frozen EMA otherwise
        assert not torch.allclose(expected[name], trajectory[0][name], rtol=0, atol=1e-4), name
        torch.testing.assert_close(trainer.ema.shadow[name].double(), expected[name], rtol=1e-5, atol=1e-6)


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


def test_a_fresh_run_into_a_used_folder_starts_a_fresh_log(tmp_path):
    make_trainer(out_dir=str(tmp_path), steps=6).fit()
    history = make_trainer(out_dir=str(tmp_path), steps=3, eval_every=0).fit()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == history and [e["step"] for e in logged] == [3, 3]


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


def _compile_toolchain_missing() -> str | None:
    """Why torch.compile cannot run here (inductor or its C++ compiler missing), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError as error:
        return f"inductor unavailable: {error}"
    try:
        get_cpp_compiler()  # searches config.cpp.cxx; InvalidCxxCompiler when none works
    except RuntimeError as error:
        return f"no C++ compiler for inductor: {error}"
    return None


def test_compiled_loss_matches_eager():
    # only a missing toolchain may skip: any other failure of the compiled run is a bug
    missing = _compile_toolchain_missing()
    if missing:
        pytest.skip(missing)
    # noise=0: compiled code draws random numbers from its own generator
    eager_history = make_trainer(eval_every=0, steps=3, log_every=1, noise=0.0).fit()
    compiled = make_trainer(eval_every=0, steps=3, log_every=1, noise=0.0, compile=True)
    compiled_history = compiled.fit()
    assert [e["kind"] for e in compiled_history] == ["train"] * 3 + ["eval"]
    for a, b in zip(eager_history[:3], compiled_history[:3]):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5, abs=1e-6)


# -- non-finite losses and gradients -------------------------------------------------------
def flaky_trainer(tmp_path=None, nan_loss_at=(), nan_grad_at=(), model_seed=0, **overrides) -> Trainer:
    torch.manual_seed(model_seed)
    model = FlakyAutoencoder(ToyConfig(), nan_loss_at=nan_loss_at, nan_grad_at=nan_grad_at)
    options = dict(eval_every=0, checkpoint_every=2, out_dir=str(tmp_path) if tmp_path else None)
    options.update(overrides)
    return Trainer(model, ToyImages(40), ToyImages(16, seed=1), small_config(**options))


def test_nan_loss_stops_at_its_step_and_the_last_good_checkpoint_stays(tmp_path):
    trainer = flaky_trainer(tmp_path, nan_loss_at={5})
    with pytest.raises(NonFiniteError, match=r"^step 5: loss is nan \(group 'model'\); the weights are "
                                             r"finite.*lower lr \(now 0.01\).*--skip-nonfinite"):
        trainer.fit()
    assert trainer.step == 4
    checkpoint = load_checkpoint(tmp_path / "checkpoint")
    assert checkpoint.step == 4  # saved at step 4, not replaced
    for name, value in trainer.model.state_dict().items():
        assert torch.isfinite(checkpoint.model_state[name]).all(), name
        assert torch.equal(checkpoint.model_state[name], value), name  # step 5 changed nothing
    assert all(torch.isfinite(v).all() for v in checkpoint.ema_state.values())


def test_nan_gradient_with_a_finite_loss_stops_too():
    trainer = flaky_trainer(nan_grad_at={2})
    with pytest.raises(NonFiniteError, match=r"^step 2: gradient norm is nan \(loss [0-9.e-]+\) "
                                             r"\(group 'model'\)"):
        trainer.fit()


def test_diverged_weights_are_named_and_never_saved(tmp_path):
    trainer = flaky_trainer(tmp_path, steps=4)
    trainer.fit(stop_at=2)
    trainer.save_checkpoint()
    good = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    with torch.no_grad():
        # as an overflowing update would leave it; the sigmoid hides it: the loss stays finite
        trainer.model.decoder.bias[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^step 4: refusing to save a checkpoint with non-finite "
                                             r"weights \(decoder.bias holds inf\); the checkpoint in .* is kept"):
        trainer.fit()
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == good
    assert load_checkpoint(tmp_path / "checkpoint").step == 2
    assert not (tmp_path / "checkpoint.tmp").exists()
    with torch.no_grad():
        trainer.model.decoder.bias[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^step 5: loss is nan.*weights are already non-finite "
                                             r"\(decoder.bias holds nan\): an earlier update diverged"):
        trainer.train_step()


def test_skip_nonfinite_skips_the_update_and_counts_it(tmp_path):
    trainer = flaky_trainer(tmp_path, nan_loss_at={4}, nan_grad_at={5}, skip_nonfinite=True, ema_decay=0.5)
    trainer.fit(stop_at=3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    ema_before = {n: v.clone() for n, v in trainer.ema.shadow.items()}
    optimizer_before = {k: v.clone() for s in trainer.optimizers["model"].state.values() for k, v in s.items()}
    for _ in range(2):
        record = trainer.train_step()
        assert "loss" not in record and "grad_norm/model" not in record
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert torch.equal(trainer.ema.shadow[name], ema_before[name]), name
    optimizer_after = {k: v for s in trainer.optimizers["model"].state.values() for k, v in s.items()}
    assert all(torch.equal(optimizer_after[k], v) for k, v in optimizer_before.items())
    assert trainer.ema.num_updates == 3 and trainer.skipped_steps == 2 and trainer.step == 5
    history = trainer.fit()
    train = [e for e in history if e["kind"] == "train"]
    assert [e["skipped_steps"] for e in train] == [0, 2, 2, 2]
    assert all(math.isfinite(e["train/loss"]) for e in train)  # the window averages the good steps
    assert load_checkpoint(tmp_path / "checkpoint").meta["skipped_steps"] == 2


def test_skip_nonfinite_still_stops_a_run_that_stays_non_finite(monkeypatch):
    monkeypatch.setattr(trainer_module, "MAX_CONSECUTIVE_SKIPS", 3)
    trainer = flaky_trainer(nan_loss_at={2, 3, 4, 5, 6}, skip_nonfinite=True)
    with pytest.raises(NonFiniteError, match=r"^step 5: loss is nan.*4 steps in a row.*4 skipped in all"):
        trainer.fit()
    monkeypatch.undo()
    every_step = flaky_trainer(nan_loss_at=set(range(1, 13)), skip_nonfinite=True)
    with pytest.raises(NonFiniteError, match=r"all 12 steps .* skipped"):
        every_step.fit()


def test_skip_nonfinite_skips_only_the_failing_group():
    trainer = make_trainer(ToyGAN, eval_every=0, skip_nonfinite=True)
    original = trainer.model.loss
    trainer.model.loss = lambda batch, group: ({"g_loss": torch.tensor(float("nan"), requires_grad=True)}
                                                if group == "generator" else original(batch, group=group))
    generator = [p.detach().clone() for p in trainer.model.generator.parameters()]
    discriminator = [p.detach().clone() for p in trainer.model.discriminator.parameters()]
    record = trainer.train_step()
    assert "d_loss" in record and "g_loss" not in record and trainer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(generator, trainer.model.generator.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(discriminator, trainer.model.discriminator.parameters()))


# -- validation of inputs ------------------------------------------------------------------
@pytest.mark.parametrize("field, value, error, expected", [
    ("precision", "fp8", ValueError, "one of fp32, bf16, fp16, got 'fp8'"),
    ("steps", 0, ValueError, "an int >= 1, got 0"),
    ("steps", 2.5, TypeError, r"an int >= 1, got 2.5 \(float\)"),
    ("steps", True, TypeError, r"an int >= 1, got True \(bool\)"),
    ("batch_size", 0, ValueError, "an int >= 1, got 0"),
    ("batch_size", "8", TypeError, r"an int >= 1, got '8' \(str\)"),
    ("lr", float("inf"), ValueError, "a finite number > 0, got inf"),
    ("lr", float("nan"), ValueError, "a finite number > 0, got nan"),
    ("lr", 0.0, ValueError, "a finite number > 0, got 0.0"),
    ("lr", "1e-3", TypeError, "a finite number > 0, got '1e-3'"),
    ("grad_clip", float("nan"), ValueError, "a finite number > 0, or 0 / None to disable clipping, got nan"),
    ("grad_clip", float("inf"), ValueError, "got inf"),
    ("grad_clip", -1.0, ValueError, "got -1.0"),
    ("weight_decay", -0.1, ValueError, "a finite number >= 0, got -0.1"),
    ("ema_decay", 1.0, ValueError, r"in \[0, 1\).*got 1.0"),
    ("betas", (0.9,), ValueError, r"two numbers in \[0, 1\), got \(0.9,\)"),
    ("betas", (0.9, float("nan")), ValueError, "two numbers"),
    ("min_lr_ratio", 2.0, ValueError, r"in \[0, 1\], got 2.0"),
    ("log_every", 0, ValueError, "an int >= 1, got 0"),
    ("warmup_steps", -1, ValueError, "an int >= 0, got -1"),
    ("eval_max_items", 0, ValueError, "an int >= 1 or None, got 0"),
    ("seed", -3, ValueError, "an int >= 0, got -3"),
    ("compile", 1, TypeError, r"True or False, got 1 \(int\)"),
    ("skip_nonfinite", "yes", TypeError, "True or False, got 'yes'"),
    ("device", 0, TypeError, r"a string such as .auto.*got 0 \(int\)"),
])
def test_bad_config_values_raise(field, value, error, expected):
    with pytest.raises(error, match=rf"TrainConfig\.{field} must be .*{expected}"):
        TrainConfig(**{field: value})


def test_config_canonicalises_types_and_reads_old_dicts():
    import numpy as np

    config = TrainConfig(steps=np.int64(7), lr=1, betas=[0.5, 0.9], grad_clip=None)
    assert type(config.steps) is int and config.lr == 1.0 and type(config.lr) is float
    assert config.betas == (0.5, 0.9)
    old = config.to_dict()
    del old["skip_nonfinite"]  # a checkpoint written before the field existed
    assert TrainConfig.from_dict(old) == config
    trainer = make_trainer()
    trainer.config.lr = float("nan")  # a config mutated after construction is checked again
    with pytest.raises(ValueError, match="TrainConfig.lr"):
        Trainer(trainer.model, ToyImages(8), config=trainer.config)


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


# -- best checkpoint and early stopping ----------------------------------------------------
class ScriptedScore(ToyAutoencoder):
    """Evaluations report a scripted score and a fingerprint of the weights they saw."""

    scores: tuple = ()

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items=None):
        self.calls = getattr(self, "calls", 0) + 1
        return {"score": self.scores[self.calls - 1], "fingerprint": self.decoder.bias.sum().item()}


def scripted_trainer(scores, tmp_path=None, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = type("Scripted", (ScriptedScore,), {"scores": tuple(scores)})(ToyConfig())
    values = dict(best_metric="eval/score", eval_every=2, steps=8,
                  out_dir=None if tmp_path is None else str(tmp_path))
    values.update(overrides)
    return Trainer(model, ToyImages(40), ToyImages(16, seed=1), small_config(**values))


def test_the_best_checkpoint_is_the_evaluation_with_the_lowest_metric(tmp_path):
    trainer = scripted_trainer([3.0, 1.0, 2.0, 5.0], tmp_path)  # evaluations at steps 2, 4, 6, 8
    trainer.fit()
    best = trainer.best_entry()
    assert best["step"] == 4 and best["eval/score"] == 1.0
    assert trainer.step == 8 and not trainer.stopped_early
    assert load_checkpoint(tmp_path / "best", weights_only=True).step == 4
    assert load_checkpoint(tmp_path / "checkpoint", weights_only=True).step == 8
    # the kept weights, in memory and on disk, are the (EMA) weights that evaluation saw
    assert load_checkpoint(tmp_path / "best").ema_state["decoder.bias"].sum().item() == best["eval/fingerprint"]
    final = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with trainer.best_weights() as model:
        assert model.decoder.bias.sum().item() == best["eval/fingerprint"]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, final[name])


def test_best_defaults_to_the_validation_loss_and_survives_a_resume(tmp_path):
    trainer = make_trainer(out_dir=str(tmp_path), eval_every=2, steps=8)
    trainer.fit(stop_at=4)
    trainer.save_checkpoint()
    assert trainer.best_metric() == "val/loss"
    resumed = make_trainer(out_dir=str(tmp_path), eval_every=2, steps=8).resume(tmp_path / "checkpoint")
    resumed.fit()
    losses = [e["val/loss"] for e in resumed.history if e["kind"] == "eval"]
    assert len(losses) == 4 and resumed.best_entry()["val/loss"] == min(losses)
    assert load_checkpoint(tmp_path / "best", weights_only=True).step == resumed.best_entry()["step"]
    with resumed.best_weights():
        pass  # readable after the resume (from out_dir/best when the best predates it)


def test_early_stopping_after_patience_evaluations_without_a_new_best(tmp_path):
    # evaluations at steps 2 (3.0), 4 (1.0, best), 6 (2.0), 8 (1.5): two without a new best
    trainer = scripted_trainer([3.0, 1.0, 2.0, 1.5, 0.1, 0.1], tmp_path, steps=20, patience=2)
    trainer.fit()
    assert trainer.stopped_early and trainer.step == 8
    assert [e["step"] for e in trainer.history if e["kind"] == "eval"] == [2, 4, 6, 8]
    assert load_checkpoint(tmp_path / "checkpoint", weights_only=True).step == 8
    assert load_checkpoint(tmp_path / "best", weights_only=True).step == 4
    # a resumed run that had stopped stays stopped
    resumed = scripted_trainer([], tmp_path, steps=20, patience=2).resume(tmp_path / "checkpoint")
    resumed.fit()
    assert resumed.step == 8 and resumed.stopped_early


def test_a_new_best_resets_the_patience():
    trainer = scripted_trainer([3.0, 2.0, 2.5, 1.0, 1.2, 0.5, 0.6], steps=14, patience=2)
    trainer.fit()
    assert not trainer.stopped_early and trainer.step == 14
    assert trainer.best_entry()["step"] == 12


def test_keep_best_off_keeps_nothing(tmp_path):
    trainer = scripted_trainer([3.0, 1.0, 2.0, 5.0], tmp_path, keep_best=False)
    trainer.fit()
    assert trainer.best_entry()["step"] == 4  # still reported
    assert not (tmp_path / "best").exists()
    with pytest.raises(ValueError, match="no best weights"):
        with trainer.best_weights():
            pass


@pytest.mark.parametrize("field, value, error", [
    ("keep_best", 1, TypeError), ("patience", 0, ValueError), ("patience", 2.0, TypeError),
    ("best_metric", "", ValueError), ("best_metric", 3, TypeError),
])
def test_best_and_patience_fields_are_validated(field, value, error):
    with pytest.raises(error, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_a_fresh_run_into_a_used_folder_drops_the_old_best(tmp_path):
    scripted_trainer([3.0, 1.0, 2.0, 5.0], tmp_path).fit()
    assert (tmp_path / "best").is_dir()
    scripted_trainer([3.0, 1.0, 2.0, 5.0], tmp_path, keep_best=False).fit()
    assert not (tmp_path / "best").exists()

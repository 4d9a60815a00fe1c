"""FSDP2 (strategy "fsdp"): 2 gloo ranks take the same steps as 1 process with the same global
batch, and sharded checkpoints resume on another number of processes (2 -> 1 and 1 -> 2).

One launch of 2 ranks (module fixture) trains a tiny GPT with FSDP and resumes a 1-process
checkpoint; the tests then compare what the ranks wrote with single-process runs.
"""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from genkernels.models.gpt import GPT, GPTConfig
from genkernels.train import TrainConfig, Trainer, load_checkpoint, load_model
from genkernels.train import distributed
from tests.train.test_distributed import finish_rank, gloo_available, init_rank, launch

# Two ranks reduce-scatter (average) two half-batch gradients where one process back-propagates
# the whole batch: the same math summed in another order. Measured after 6 AdamW steps at
# lr 1e-2 (fp32): max |difference| of any weight 7.4e-8 (EMA 6.8e-8, resumed 2 -> 1 7.8e-8,
# 1 -> 2 7.5e-9), val losses equal; the bound leaves room for other BLAS libraries.
TOLERANCE = 1e-6
STEPS, HALF = 6, 3


class Windows(Dataset):
    """`count` random token windows (context + 1,) over a vocabulary of 37 (odd: uneven shards)."""

    def __init__(self, count: int, seed: int = 0, context: int = 8, vocab: int = 37):
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, vocab, (count, context + 1), generator=generator)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        return self.tokens[index]


def config(**overrides) -> TrainConfig:
    values = dict(steps=STEPS, batch_size=4, lr=1e-2, warmup_steps=2, log_every=1, eval_every=HALF,
                  checkpoint_every=0, ema_decay=0.9, progress=False, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def make_trainer(**overrides) -> Trainer:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=37, context=8, dim=12, depth=2, num_heads=2))  # dropout 0: deterministic
    return Trainer(model, Windows(32), Windows(8, seed=1), config(**overrides))


def full_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Live weights as whole tensors (all-gathered when sharded: call on every rank)."""
    return {k: distributed.full_tensor(v.detach()).clone() for k, v in trainer.model.state_dict().items()}


def evals(history):
    return [e for e in history if e["kind"] == "eval"]


def _fsdp_worker(out_dir: str) -> None:
    rank, world_size = init_rank()
    try:
        # A. FSDP from scratch, a sharded checkpoint half-way, then to the end
        trainer = make_trainer(strategy="fsdp", out_dir=os.path.join(out_dir, "fsdp"))
        assert trainer.sharded and distributed.is_sharded(trainer.model.embed.weight)
        trainer.fit(stop_at=HALF)
        trainer.save_checkpoint(os.path.join(out_dir, "half2"))
        trainer.fit()
        weights = full_weights(trainer)
        ema = {k: distributed.full_tensor(v).clone() for k, v in trainer.ema.shadow.items()}
        if rank == 0:
            save_file(weights, os.path.join(out_dir, "fsdp_weights.safetensors"))
            save_file(ema, os.path.join(out_dir, "fsdp_ema.safetensors"))
            with open(os.path.join(out_dir, "fsdp_history.json"), "w") as file:
                json.dump(trainer.history, file)

        # B. 1 -> 2: a checkpoint of one process resumed by 2 FSDP ranks
        resumed = make_trainer(strategy="fsdp").resume(os.path.join(out_dir, "half1"))
        resumed.fit()
        weights = full_weights(resumed)
        if rank == 0:
            save_file(weights, os.path.join(out_dir, "resumed12_weights.safetensors"))
            with open(os.path.join(out_dir, "resumed12_history.json"), "w") as file:
                json.dump(resumed.history, file)

        # C. mixed precision: bf16 parameters in the blocks' forward, fp32 master weights
        mixed = make_trainer(strategy="fsdp", precision="bf16", steps=HALF)
        seen = []
        mixed.model.blocks[0].attn.qkv.register_forward_pre_hook(lambda m, args: seen.append(str(m.weight.dtype)))
        mixed.fit()
        if rank == 0:
            with open(os.path.join(out_dir, "bf16.json"), "w") as file:
                json.dump({"forward_dtypes": sorted(set(seen)), "history": mixed.history,
                           "master_dtypes": sorted({str(p.dtype) for p in mixed.model.parameters()})}, file)
    finally:
        finish_rank()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process reference (with its half-way checkpoint) and the 2-rank runs' files."""
    if not gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fsdp")
    single = make_trainer()
    single.fit(stop_at=HALF)
    single.save_checkpoint(out / "half1")
    single.fit()
    launch("tests.train.test_fsdp:_fsdp_worker", 2, out, str(out))
    return single, out


def assert_weights_close(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=TOLERANCE, msg=name)


def test_fsdp_on_two_ranks_matches_one_process_with_the_same_global_batch(runs):
    single, out = runs
    assert_weights_close(full_weights(single), load_file(str(out / "fsdp_weights.safetensors")))
    assert_weights_close(single.ema.shadow, load_file(str(out / "fsdp_ema.safetensors")))
    # rank 0 evaluates an unsharded replica holding the all-gathered EMA weights: same val losses
    history = json.loads((out / "fsdp_history.json").read_text())
    assert [e["step"] for e in evals(history)] == [HALF, STEPS]
    for sharded, whole in zip(evals(history), evals(single.history)):
        assert sharded["val/loss"] == pytest.approx(whole["val/loss"], abs=TOLERANCE)


def test_fsdp_checkpoint_is_sharded_safetensors_with_an_index(runs):
    _, out = runs
    checkpoint = out / "fsdp" / "checkpoint"
    names = sorted(p.name for p in checkpoint.iterdir())
    for kind in ("model", "ema", "optimizer"):
        assert {f"{kind}-rank0-of-2.safetensors", f"{kind}-rank1-of-2.safetensors"} <= set(names)
    assert "model.safetensors" not in names
    meta = json.loads((checkpoint / "trainer.json").read_text())
    embed = meta["shards"]["tensors"]["model"]["embed.weight"]
    assert embed["shape"] == [37, 12]  # 37 rows: 19 on rank 0, 18 on rank 1
    assert embed["pieces"] == [{"rank": 0, "offsets": [0, 0], "shape": [19, 12]},
                               {"rank": 1, "offsets": [19, 0], "shape": [18, 12]}]
    assert set(load_file(str(checkpoint / "optimizer-rank1-of-2.safetensors"))) == {
        name for name, entry in meta["shards"]["tensors"]["optimizer"].items()
        if any(piece["rank"] == 1 for piece in entry["pieces"])}
    # the best checkpoint (keep_best) is sharded too, and load_model reads either as a whole model
    assert (out / "fsdp" / "best" / "model-rank1-of-2.safetensors").exists()
    model = load_model(checkpoint)
    parameters = dict(model.named_parameters())  # the EMA file also holds non-persistent buffers
    ema = {k: v for k, v in load_file(str(out / "fsdp_ema.safetensors")).items() if k in parameters}
    assert_weights_close(ema, parameters)


def test_two_rank_checkpoint_resumes_in_one_process(runs, tmp_path):
    single, out = runs
    loaded = load_checkpoint(out / "half2")
    assert loaded.step == HALF and loaded.meta["world_size"] == 2
    resumed = make_trainer(out_dir=str(tmp_path)).resume(out / "half2")
    assert resumed.step == HALF and not resumed.sharded
    resumed.fit()
    assert_weights_close(full_weights(single), full_weights(resumed))
    assert_weights_close(single.ema.shadow, resumed.ema.shadow)
    for group in single.optimizers:  # AdamW moments re-assembled from both ranks' shards
        expected = single.optimizers[group].state_dict()["state"]
        actual = resumed.optimizers[group].state_dict()["state"]
        for index in expected:
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(actual[index][key], expected[index][key], rtol=0, atol=TOLERANCE)


def test_one_process_checkpoint_resumes_on_two_fsdp_ranks(runs):
    single, out = runs
    assert_weights_close(full_weights(single), load_file(str(out / "resumed12_weights.safetensors")))
    history = json.loads((out / "resumed12_history.json").read_text())
    assert [e["step"] for e in evals(history)] == [HALF, STEPS]  # the half-way one from the checkpoint
    assert evals(history)[-1]["val/loss"] == pytest.approx(evals(single.history)[-1]["val/loss"], abs=TOLERANCE)


def test_fsdp_mixed_precision_computes_in_bf16_on_fp32_master_weights(runs):
    _, out = runs
    result = json.loads((out / "bf16.json").read_text())
    assert result["forward_dtypes"] == ["torch.bfloat16"] and result["master_dtypes"] == ["torch.float32"]
    reference = make_trainer(steps=HALF)  # fp32, one process
    reference.fit()
    # bf16 rounding (2^-8 relative) on a loss of ~3.6: measured 2.6e-3 (one process with bf16
    # autocast: 2.7e-3; FSDP bf16 vs one-process bf16: 1.8e-4)
    assert evals(result["history"])[-1]["val/loss"] == pytest.approx(evals(reference.history)[-1]["val/loss"],
                                                                     abs=0.02)


def test_one_process_ignores_the_strategy():
    ddp, fsdp = make_trainer(steps=2), make_trainer(steps=2, strategy="fsdp")
    assert not fsdp.sharded
    ddp.fit()
    fsdp.fit()
    for (name, a), (_, b) in zip(ddp.model.state_dict().items(), fsdp.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_unknown_strategy_is_an_error_naming_the_argument():
    with pytest.raises(ValueError, match=r"TrainConfig.strategy must be one of ddp, fsdp, got 'zero3'"):
        TrainConfig(strategy="zero3")
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig.from_dict({"strategy": None})


def test_fsdp_units_are_the_models_hook_or_its_module_list_blocks():
    from torch import nn

    model = GPT(GPTConfig(vocab_size=37, context=8, dim=12, depth=3, num_heads=2))
    assert distributed.fsdp_units(model) == list(model.blocks)  # embed, norm stay with the root

    class Hooked(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def fsdp_units(self):
            return [self.b]

    hooked = Hooked()
    assert distributed.fsdp_units(hooked) == [hooked.b]
    hooked.fsdp_units = lambda: ["b"]
    with pytest.raises(TypeError, match=r"fsdp_units\(\) must return modules"):
        distributed.fsdp_units(hooked)
    assert distributed.fsdp_units(nn.Sequential(nn.Linear(2, 2))) == []  # no ModuleList: root only

    assert distributed.mixed_precision_policy("fp32") is None
    policy = distributed.mixed_precision_policy("bf16")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert distributed.mixed_precision_policy("fp16").param_dtype == torch.float16

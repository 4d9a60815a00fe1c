"""Data parallel training: 2 CPU processes (gloo) take the same steps as 1 with the same batch."""
import datetime
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from genkernels.train import NonFiniteError, TrainConfig, Trainer, load_checkpoint
from genkernels.train import distributed
from tests.train.toys import FlakyAutoencoder, ToyAutoencoder, ToyConfig, ToyGAN, ToyImages

# Two ranks average two half-batch gradients where one process averages the whole batch: the
# same math in another summation order, so weights agree to float rounding after a few steps.
TOLERANCE = 1e-6
STEPS = 5


def config(out_dir=None, **overrides) -> TrainConfig:
    values = dict(steps=STEPS, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0,
                  checkpoint_every=0, ema_decay=0.9, progress=False, device="cpu", out_dir=out_dir)
    values.update(overrides)
    return TrainConfig(**values)


def train_deterministic_toy(out_dir=None) -> Trainer:
    torch.manual_seed(0)
    model = ToyAutoencoder(ToyConfig(noise=0.0))  # no noise: rank RNG streams differ by design
    trainer = Trainer(model, ToyImages(40), ToyImages(8, seed=1), config(out_dir))
    trainer.fit()
    return trainer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # a rank left waiting in a collective fails after a minute instead of gloo's half hour
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=60))
    try:
        trainer = train_deterministic_toy(out_dir=os.path.join(out_dir, "toy"))
        assert trainer.dist.world_size == world_size and trainer.dist.rank == rank
        save_file(dict(trainer.model.state_dict()), os.path.join(out_dir, f"toy_rank{rank}.safetensors"))

        # Two optimizer groups: each group's loss leaves the other's parameters unused.
        torch.manual_seed(0)
        gan = Trainer(ToyGAN(ToyConfig()), ToyImages(40), config=config(steps=3))
        gan.fit()
        save_file(dict(gan.model.state_dict()), os.path.join(out_dir, f"gan_rank{rank}.safetensors"))

        # A NaN loss on rank 1 alone, with finite gradients: every rank must stop at that step
        # (a rank that went on would wait forever in the next all-reduce).
        torch.manual_seed(0)
        flaky = FlakyAutoencoder(ToyConfig(), nan_value_at={2} if rank == 1 else ())
        try:
            Trainer(flaky, ToyImages(40), config=config()).fit()
            message = "no error"
        except NonFiniteError as error:
            message = str(error)
        with open(os.path.join(out_dir, f"nonfinite_rank{rank}.txt"), "w") as file:
            file.write(message)
    finally:
        distributed.cleanup()


def test_shard_splits_a_global_batch_into_contiguous_slices():
    indices = torch.arange(12)
    parts = [distributed.shard(indices, distributed.DistributedContext(r, 3, r)) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert distributed.shard(indices, distributed.DistributedContext()) is indices


def test_single_process_without_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    context, device = distributed.setup(torch.device("cpu"))
    assert (context.rank, context.world_size, context.is_main, context.enabled) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    single = train_deterministic_toy()
    rank0 = load_file(str(tmp_path / "toy_rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "toy_rank1.safetensors"))
    for name, value in single.model.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), name  # DDP keeps the ranks in lockstep
        torch.testing.assert_close(rank0[name], value, rtol=0, atol=TOLERANCE)

    # Rank 0 alone wrote the run files; the checkpoint holds both ranks' RNG states.
    checkpoint = load_checkpoint(tmp_path / "toy")
    assert checkpoint.step == STEPS and checkpoint.meta["world_size"] == 2
    assert {"rank0.torch_cpu", "rank1.torch_cpu"} <= set(checkpoint.rng_tensors)
    logged = (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == STEPS + 1  # one line per step and the final evaluation, written once

    assert (tmp_path / "nonfinite_rank0.txt").read_text().startswith(
        "step 2: loss is non-finite on another rank (group 'model')")
    assert (tmp_path / "nonfinite_rank1.txt").read_text().startswith("step 2: loss is nan (group 'model')")

    gan0 = load_file(str(tmp_path / "gan_rank0.safetensors"))
    gan1 = load_file(str(tmp_path / "gan_rank1.safetensors"))
    for name in gan0:
        assert torch.equal(gan0[name], gan1[name]), name

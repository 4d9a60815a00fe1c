"""Data parallel training: 2 CPU processes (gloo) take the same steps as 1 with the same batch.

The ranks are fresh Python processes started by `launch` (not mp.spawn): they meet through a
FileStore in the test's tmp_path (no TCP port to choose, so no port race), gloo is pinned to the
loopback interface, every collective times out after a minute, each rank's output goes to a log
file, and a failure reports every rank's exit status (signal included) and the tail of its log.
"""
import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
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


REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIVE_TIMEOUT_S = 60  # a rank left waiting in a collective fails after this, not gloo's 30 min


def gloo_available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


def launch(target: str, world_size: int, out_dir, *args: str, timeout: float = 180.0) -> None:
    """Run `target` ("module:function", called as function(*args)) in `world_size` fresh Python
    processes with RANK/WORLD_SIZE/LOCAL_RANK set, as torchrun would; the function calls
    `init_rank()` first. Returns when all exit 0; otherwise kills the rest and fails naming each
    rank's exit status and the tail of its output."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = out_dir / f"store-{uuid.uuid4().hex}"  # FileStore: fresh per launch, no port
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; {function}(*sys.argv[1:])"
    base_env = dict(os.environ, OMP_NUM_THREADS="1", GENKERNELS_TEST_INIT_METHOD=f"file://{store}",
                    PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    base_env.pop("MASTER_PORT", None)
    if os.path.exists("/sys/class/net/lo") and "GLOO_SOCKET_IFNAME" not in os.environ:
        base_env["GLOO_SOCKET_IFNAME"] = "lo"  # not whatever interface the hostname resolves to
    processes, logs = [], []
    for rank in range(world_size):
        env = dict(base_env, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        log_path = out_dir / f"{function}-rank{rank}.log"
        logs.append(log_path)
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO_ROOT,
                                              env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    failed_at = None
    while any(p.poll() is None for p in processes):
        now = time.monotonic()
        if failed_at is None and any(p.returncode not in (None, 0) for p in processes):
            failed_at = now  # the others get a few seconds to report their own error
        if now > deadline or (failed_at is not None and now > failed_at + 10):
            break
        time.sleep(0.1)
    timed_out = time.monotonic() > deadline
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()
    if any(p.returncode != 0 for p in processes):
        def status(code):
            if code is not None and code < 0:
                return f"killed by {signal.Signals(-code).name}"
            return f"exit status {code}"
        report = [f"{target} on {world_size} gloo ranks failed" + (f" (timed out after {timeout:.0f} s)"
                                                                     if timed_out else "") + ":"]
        for rank, (p, log_path) in enumerate(zip(processes, logs)):
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            report.append(f"--- rank {rank}: {status(p.returncode)}; last lines of {log_path}:\n{tail}")
        pytest.fail("\n".join(report), pytrace=False)


def init_rank() -> tuple[int, int]:
    """Join the process group of a `launch`ed rank; returns (rank, world_size)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=os.environ["GENKERNELS_TEST_INIT_METHOD"],
                                         rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return rank, world_size


def finish_rank() -> None:
    """Leave together: a rank that exits while another still talks to it aborts that one (gloo)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    distributed.cleanup()


def _worker(out_dir: str) -> None:
    rank, world_size = init_rank()
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
        finish_rank()


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
    if not gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    launch("tests.train.test_distributed:_worker", 2, tmp_path, str(tmp_path))

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


def _failing_worker() -> None:
    rank, _ = init_rank()
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    finish_rank()  # rank 0 waits in the barrier until its collective times out or it is killed


def test_launch_reports_each_rank_and_its_output_when_a_rank_fails(tmp_path):
    if not gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with pytest.raises(pytest.fail.Exception) as failure:
        launch("tests.train.test_distributed:_failing_worker", 2, tmp_path, timeout=120)
    message = str(failure.value)
    assert "--- rank 1: exit status 1" in message and "rank 1 fails on purpose" in message
    assert "--- rank 0:" in message  # killed after the grace period, or failed in its barrier

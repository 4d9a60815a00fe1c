"""Trainer: AdamW + warm-up/cosine schedule, mixed precision, EMA, evaluation, checkpoints.

One step = one global batch: for each optimizer group of the model (see
`GenerativeModel.optimizer_groups`) compute `loss(batch[, group=name])`, back-propagate its
first entry, unscale/clip the group's gradients and step its AdamW; then update the EMA.

Reproducibility: the trainer seeds torch, numpy and `random` with `config.seed + rank`, draws
the data order from its own generator, and runs evaluation and sampling under a separately
seeded, restored RNG state, so evaluating or sampling never changes what training does next.
Same seed, same losses (bitwise on CPU); checkpoints carry every RNG state so a resumed run
continues exactly as an uninterrupted one.

Best checkpoint and early stopping: after each evaluation the trainer finds the evaluation with
the lowest `best_metric` in its history (`best_entry`); with `keep_best` it keeps those weights
(the evaluated ones: EMA when on) and, with out_dir, saves that checkpoint to out_dir/best. With
`patience` it stops after that many evaluations in a row without a new best. Both are derived from
the history, which checkpoints carry, so a resumed run keeps counting where it left off.

Strategies under torchrun (`config.strategy`): "ddp" wraps the loss computation in
DistributedDataParallel; "fsdp" shards the model with FSDP2 (see genkernels.train.distributed):
the optimizers are built over the sharded (DTensor) parameters, gradient clipping measures the
global norm across shards, and the EMA averages each rank's own shards (no extra communication,
1/K of the memory). Evaluation and sampling run on rank 0 alone, on an unsharded replica of the
model that holds the evaluated (EMA, else live) weights, all-gathered from the shards at each
evaluation, periodic sample, resume and the end of fit(); checkpoints are sharded (each rank
writes its own shards) and resume on any number of processes (see genkernels.train.checkpoint).

Non-finite values: a NaN/inf loss, or a NaN/inf gradient norm outside fp16 (where the GradScaler
skips such steps by design), raises NonFiniteError naming the step before the optimizer is
stepped, so the weights stay those of the last good step; with `skip_nonfinite` the group's update
is skipped and counted instead. Checkpoints refuse non-finite weights (the last good one is kept).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from genkernels.models.base import GenerativeModel
from genkernels.train import distributed
from genkernels.train.batches import SeededBatches
from genkernels.train.config import TrainConfig
from genkernels.train.ema import EMA

# Evaluation and sampling draw from their own streams, offset from the training seed.
_EVAL_SEED_OFFSET = 1_000_003
# skip_nonfinite gives up after this many skipped steps in a row: the run has diverged for good.
MAX_CONSECUTIVE_SKIPS = 100


class NonFiniteError(ValueError):
    """Training produced a NaN/inf loss, gradient norm or weight; the message names the step.

    A ValueError: it almost always comes from a setting (learning rate, precision, clipping) or
    from data with NaN/inf in it, and the CLI reports ValueErrors in one line.
    """


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of 0-based `step`: linear warm-up, then cosine decay to lr * min_lr_ratio.

    warm-up  lr * (step + 1) / warmup_steps                 for step < warmup_steps
    decay    lr * (r + (1 - r) * (1 + cos(pi * p)) / 2),    p = (step - warmup) / (steps - warmup)
    where r = min_lr_ratio; p is clamped to 1 past the last step.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else as torch.device parses it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
    return resolved


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device):
    """Run a block with torch/numpy/random seeded to `seed`, then restore the previous states."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a collated batch (tensor, tuple, list or dict) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def autocast(device: torch.device, precision: str):
    """torch.autocast for "bf16"/"fp16"; a no-op context for "fp32"."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported on {torch.cuda.get_device_name(device)}; "
                         "use --precision fp16 or fp32")
    if precision != "fp32":
        try:
            with autocast(device, precision):
                pass
        except RuntimeError as error:
            raise ValueError(f"precision {precision!r} (autocast) is not supported on device "
                             f"{device.type!r} by this torch build: {error}") from error


def _sharded_batches(order: SeededBatches, context: distributed.DistributedContext) -> Iterator[list[int]]:
    """Endless batch sampler: this rank's indices of each global batch of `order`."""
    while True:
        yield distributed.shard(order.next_indices(), context).tolist()


class _LossModule(nn.Module):
    """The loss as a forward(), so DistributedDataParallel and torch.compile can wrap it."""

    def __init__(self, model: GenerativeModel):
        super().__init__()
        self.model = model

    def forward(self, batch, group: Optional[str] = None):
        if group is None:
            return self.model.loss(batch)
        return self.model.loss(batch, group=group)


def _check_losses(losses: Any, model: GenerativeModel) -> dict[str, torch.Tensor]:
    if not isinstance(losses, dict) or not losses:
        raise TypeError(f"{type(model).__name__}.loss must return a non-empty dict of tensors, "
                        f"got {type(losses).__name__}")
    objective = next(iter(losses.values()))
    if not isinstance(objective, torch.Tensor) or objective.numel() != 1:
        raise TypeError(f"{type(model).__name__}.loss: the first entry must be a scalar tensor, "
                        f"got {objective!r:.80}")
    return losses


def _nonfinite_kind(value: torch.Tensor) -> str:
    """'nan', 'inf' or '-inf': the first non-finite entry of `value`.

    A finite local value means another rank's was not (the verdict is agreed across ranks)."""
    value = value.detach().float().flatten()
    bad = value[~torch.isfinite(value)]
    return str(float(bad[0])) if bad.numel() else "non-finite on another rank"


def _first_nonfinite(named_tensors) -> Optional[str]:
    """'name: nan' of the first floating-point tensor holding NaN/inf, or None when all are finite."""
    for name, tensor in named_tensors:
        tensor = distributed.local_part(tensor)  # a shard: the verdict is this rank's
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{name} holds {_nonfinite_kind(tensor)}"
    return None


def _adamw(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW where only matrices/kernels decay (biases, norm scales and embeddings-as-vectors do not)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


class Trainer:
    """Train a GenerativeModel on a torch Dataset.

    model      a GenerativeModel (built and seeded by the caller)
    train_set  Dataset of items `default_collate` can batch (e.g. (image, label) tuples)
    val_set    optional held-out Dataset for the val loss and `model.evaluate`
    config     TrainConfig
    metadata   JSON-able facts stored with checkpoints (the CLI records the data name)

    `fit()` trains to `config.steps` and returns the history: one dict per log line
    ({"kind": "train", "step", "lr", "train/<loss>", "grad_norm/<group>", "items_per_s", ...})
    and per evaluation ({"kind": "eval", "step", "val/<loss>", "eval/<metric>"}), also appended
    to out_dir/metrics.jsonl. `resume(path)` restores a checkpoint before `fit()`.
    """

    def __init__(self, model: GenerativeModel, train_set: Dataset, val_set: Optional[Dataset] = None,
                 config: Optional[TrainConfig] = None, *, metadata: Optional[dict[str, Any]] = None):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a genkernels GenerativeModel, got {type(model).__name__}")
        self.config = config = config if config is not None else TrainConfig()
        config.validate()
        self.model, self.train_set, self.val_set = model, train_set, val_set
        self.metadata = dict(metadata or {})
        self.dist, self.device = distributed.setup(resolve_device(config.device))
        if config.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of "
                             f"ranks ({self.dist.world_size})")
        check_precision(config.precision, self.device)
        seed_everything(config.seed + self.dist.rank)

        self.model.to(self.device)
        # fsdp over several ranks: parameters become DTensor shards (before the optimizers exist)
        self.sharded = config.strategy == "fsdp" and self.dist.enabled
        self._replica: Optional[GenerativeModel] = None  # rank 0's unsharded model for evaluation
        if self.sharded:
            distributed.broadcast_module(model, self.dist)  # rank 0's start, as DDP does
            if self.is_main:
                self._replica = copy.deepcopy(model)
            self._loss_module = distributed.fully_shard_model(_LossModule(model), model, self.dist,
                                                              self.device, config.precision)
        self.groups = self._validated_groups()
        self.optimizers = {name: _adamw(params, config) for name, params in self.groups.items()}
        if self.sharded and config.precision == "fp16":
            # gradients are shards: the ranks must agree on whether any shard overflowed
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            self.scaler = ShardedGradScaler(self.device.type)
        else:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        if not self.sharded:
            # Several groups: each group's loss leaves the other groups' parameters unused.
            self._loss_module = distributed.wrap(_LossModule(model), self.dist, self.device,
                                                 find_unused_parameters=len(self.groups) > 1)
        self._loss_fn = torch.compile(self._loss_module) if config.compile else self._loss_module
        # After wrapping: DDP has broadcast rank 0's weights, so every rank averages the same start.
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.batches = SeededBatches(len(train_set), config.batch_size, config.seed)
        self.step = 0
        self.skipped_steps = 0  # steps with a non-finite group skipped (skip_nonfinite)
        self.consecutive_skips = 0
        self.history: list[dict[str, Any]] = []
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self._stream: Optional[Iterator] = None
        self._log_started = False  # metrics.jsonl written by this trainer yet
        self._best_state: Optional[dict[str, torch.Tensor]] = None  # CPU copy of the best weights
        self.stopped_early = False  # patience ran out
        self._reset_log_window()

    # -- setup helpers ---------------------------------------------------------------------
    def _validated_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = self.model.optimizer_groups()
        if not isinstance(groups, dict) or not groups:
            raise TypeError(f"{type(self.model).__name__}.optimizer_groups must return a non-empty "
                            f"dict of parameter lists, got {groups!r:.80}")
        seen: set[int] = set()
        for name, params in groups.items():
            params = list(params)
            if not params:
                raise ValueError(f"optimizer group {name!r} of {type(self.model).__name__} has no parameters")
            for p in params:
                if id(p) in seen:
                    raise ValueError(f"a parameter appears in two optimizer groups (second: {name!r})")
                seen.add(id(p))
            groups[name] = params
        return groups

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.config)

    # -- data ------------------------------------------------------------------------------
    def _next_batch(self):
        """This rank's share of the next global batch, collated and on the device.

        `self.batches` always reflects the batches consumed (it is what checkpoints save); with
        workers, the DataLoader reads ahead from a copy of it.
        """
        if self.config.num_workers == 0:
            indices = distributed.shard(self.batches.next_indices(), self.dist).tolist()
            batch = default_collate([self.train_set[i] for i in indices])
        else:
            if self._stream is None:
                ahead = SeededBatches(self.batches.num_items, self.batches.batch_size, 0)
                ahead.load_state_dict(self.batches.state_dict())
                loader = DataLoader(self.train_set, batch_sampler=_sharded_batches(ahead, self.dist),
                                    num_workers=self.config.num_workers,
                                    pin_memory=self.device.type == "cuda",
                                    # its own generator: creating the loader must not draw from
                                    # the global RNG, or resumed and fresh runs would diverge
                                    generator=torch.Generator().manual_seed(self.config.seed))
                self._stream = iter(loader)
            batch = next(self._stream)
            self.batches.next_indices()
        return move_to(batch, self.device)

    # -- one optimisation step -------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """Take one step on the next batch; return detached losses and gradient norms.

        A group whose loss or gradient norm is not finite is not stepped: NonFiniteError is
        raised, or with `skip_nonfinite` its update and this step's EMA update are skipped, its
        entries left out of the returned record and the step counted in `skipped_steps`.
        """
        lr = self.lr_at(self.step)
        batch = self._next_batch()
        self.model.train()
        record: dict[str, torch.Tensor] = {}
        skipped = []
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = lr
            self.model.zero_grad(set_to_none=True)
            with autocast(self.device, self.config.precision):
                losses = self._loss_fn(batch) if len(self.optimizers) == 1 else self._loss_fn(batch, group=name)
            losses = _check_losses(losses, self.model)
            objective = next(iter(losses.values())).float()
            self.scaler.scale(objective).backward()
            self.scaler.unscale_(optimizer)
            # max_norm=inf measures the norm without scaling (the coefficient clamps to 1)
            norm = self._clip_gradients(self.groups[name], self.config.grad_clip or math.inf)
            problem = self._nonfinite_problem(objective, norm)
            if problem is not None:
                self._handle_nonfinite(name, problem)
                skipped.append(name)
                continue
            self.scaler.step(optimizer)
            for key, value in losses.items():
                record[f"{name}_{key}" if key in record else key] = value.detach().float()
            record[f"grad_norm/{name}"] = norm.detach().float()
        self.scaler.update()
        self.model.zero_grad(set_to_none=True)
        if skipped:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
            if self.ema is not None:
                self.ema.update()
        self.step += 1
        return record

    def _clip_gradients(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """clip_grad_norm_; with sharded gradients the norm is the global one (all shards)."""
        if not self.sharded:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        norm = distributed.full_tensor(torch.nn.utils.get_total_norm(grads))
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def _nonfinite_problem(self, objective: torch.Tensor, norm: torch.Tensor) -> Optional[str]:
        """None when the loss and the gradient norm are finite (on every rank), else what is not.

        One host sync per group. Under fp16 a non-finite norm is the GradScaler's business (it
        skips that step and lowers the scale), so only the loss counts there. Under DDP the
        verdict is agreed by all ranks, so no rank stops while the others wait in a collective.
        """
        flags = torch.stack([torch.isfinite(objective.detach()), torch.isfinite(norm.detach())])
        flags = distributed.all_ranks_agree(flags.to(torch.int32), self.dist)
        loss_ok, norm_ok = (bool(f) for f in flags.tolist())
        if not loss_ok:
            return f"loss is {_nonfinite_kind(objective)}"
        if not norm_ok and not self.scaler.is_enabled():
            return f"gradient norm is {_nonfinite_kind(norm)} (loss {float(objective.detach()):.4g})"
        return None

    def _handle_nonfinite(self, group: str, problem: str) -> None:
        """Raise NonFiniteError, or under skip_nonfinite return unless too many steps in a row failed."""
        where = f"step {self.step + 1}: {problem} (group {group!r})"
        if not self.config.skip_nonfinite:
            raise NonFiniteError(f"{where}; {self._nonfinite_hint()}")
        if self.consecutive_skips + 1 > MAX_CONSECUTIVE_SKIPS:
            raise NonFiniteError(f"{where}; {self.consecutive_skips + 1} steps in a row were non-finite "
                                 f"({self.skipped_steps + 1} skipped in all), giving up; {self._nonfinite_hint()}")

    def _nonfinite_hint(self) -> str:
        """Where the NaN/inf likely came from and what to change (computed only when raising)."""
        config = self.config
        weights = _first_nonfinite(self.model.named_parameters())
        if weights is not None:
            return (f"the weights are already non-finite ({weights}): an earlier update diverged, "
                    f"lower lr (now {config.lr:g})")
        remedies = ["check the data for NaN/inf", f"lower lr (now {config.lr:g})"]
        if config.lr >= 1.0:
            remedies.reverse()  # the likeliest cause first
        if not config.grad_clip:
            remedies.append("set grad_clip (--grad-clip)")
        if config.precision != "fp32":
            remedies.append("use fp32")
        if not config.skip_nonfinite:
            remedies.append("pass skip_nonfinite (--skip-nonfinite) to skip such steps")
        local = (distributed.local_part(p.detach()) for p in self.model.parameters())
        largest = max((float(p.abs().max()) for p in local if p.numel()), default=0.0)
        return (f"the weights are finite (largest |weight| {largest:.3g}), so this batch or the forward pass "
                "produced it: " + ", ".join(remedies[:-1]) + " or " + remedies[-1])

    # -- evaluation and sampling -----------------------------------------------------------
    def averaged_weights(self):
        """Context in which the model holds the EMA weights (the live ones when EMA is off)."""
        return self.ema.averaged() if self.ema is not None else contextlib.nullcontext()

    def _averaged_state(self) -> dict[str, torch.Tensor]:
        """The evaluated weights (EMA, else live) as whole tensors, parameters and buffers.
        Sharded: all-gathers every tensor, so call it on every rank."""
        if self.ema is not None:
            named = self.ema.shadow
        else:
            named = dict(self.model.named_parameters())
            named.update(self.model.named_buffers())
        return {name: distributed.full_tensor(value.detach()) for name, value in named.items()}

    def _sync_replica(self) -> None:
        """fsdp: copy the evaluated weights into rank 0's unsharded replica (every rank calls)."""
        if not self.sharded:
            return
        state = self._averaged_state()
        if self._replica is not None:
            with torch.no_grad():
                targets = dict(self._replica.named_parameters())
                targets.update(self._replica.named_buffers())
                for name, value in state.items():
                    targets[name].copy_(value)

    @contextlib.contextmanager
    def _evaluated_model(self):
        """The model holding the evaluated weights: the EMA swapped in, or under fsdp rank 0's
        replica (synchronised at the last evaluation, periodic sample, resume or end of fit)."""
        if not self.sharded:
            with self.averaged_weights():
                yield self.model
            return
        if self._replica is None:
            raise RuntimeError("with strategy 'fsdp', evaluation and sampling run on rank 0 only")
        yield self._replica

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Val losses (means over up to eval_max_items items) and model.evaluate, EMA weights."""
        entry: dict[str, Any] = {"kind": "eval", "step": self.step}
        if self.val_set is None:
            return entry
        with self._evaluated_model() as model, isolated_rng(self.config.seed + _EVAL_SEED_OFFSET, self.device):
            model.eval()
            try:
                if model.reports_validation_loss:  # False for a GAN: see GAN.reports_validation_loss
                    entry.update({f"val/{k}": v for k, v in self.validation_losses(model).items()})
                metrics = model.evaluate(self.val_set, max_items=self.config.eval_max_items)
                entry.update({f"eval/{k}": float(v) for k, v in metrics.items()})
            finally:
                model.train()
        return entry

    @torch.no_grad()
    def validation_losses(self, model: Optional[GenerativeModel] = None) -> dict[str, float]:
        return validation_losses(self.model if model is None else model, self.val_set,
                                 batch_size=self.config.batch_size,
                                 max_items=self.config.eval_max_items, device=self.device,
                                 precision=self.config.precision,
                                 groups=list(self.groups) if len(self.groups) > 1 else None)

    @torch.no_grad()
    def sample(self, n: int, **conditions) -> torch.Tensor:
        """n samples from the EMA weights, under a seeded RNG that training never sees; on CPU."""
        with self._evaluated_model() as model, isolated_rng(self.config.seed + _EVAL_SEED_OFFSET, self.device):
            model.eval()
            try:
                return model.sample(n, **conditions).detach().float().cpu()
            finally:
                model.train()

    def _save_periodic_samples(self) -> None:
        from genkernels.figures import save_image_grid

        self._sync_replica()
        if not self.is_main or self.out_dir is None:
            return
        samples = self.sample(self.config.num_samples)
        if samples.ndim == 4:
            save_image_grid(samples.clamp(0, 1), self.out_dir / "samples" / f"step_{self.step:06d}.png")

    # -- logging ---------------------------------------------------------------------------
    def _reset_log_window(self) -> None:
        self._window_sums: dict[str, torch.Tensor] = {}
        self._window_counts: dict[str, int] = {}  # skipped steps leave a group's keys out
        self._window_steps = 0
        self._window_start = time.perf_counter()

    def _accumulate(self, record: dict[str, torch.Tensor]) -> None:
        for key, value in record.items():
            self._window_sums[key] = self._window_sums.get(key, 0.0) + value
            self._window_counts[key] = self._window_counts.get(key, 0) + 1
        self._window_steps += 1

    def _train_entry(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._window_start
        entry: dict[str, Any] = {"kind": "train", "step": self.step, "lr": self.lr_at(self.step - 1)}
        for key, total in self._window_sums.items():
            name = key if key.startswith("grad_norm/") else f"train/{key}"
            entry[name] = float(total) / self._window_counts[key]
        if self.config.skip_nonfinite:
            entry["skipped_steps"] = self.skipped_steps
        entry["items_per_s"] = self._window_steps * self.config.batch_size / max(elapsed, 1e-9)
        self._reset_log_window()
        return entry

    def _record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if self.is_main and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # the first write of this trainer replaces any log an earlier run left in out_dir,
            # so two runs into one folder never mix (resume() rewrites it from the checkpoint)
            mode, entries = ("a", [entry]) if self._log_started else ("w", self.history)
            with open(self.out_dir / "metrics.jsonl", mode) as log:
                log.writelines(json.dumps(e) + "\n" for e in entries)
            stale_best = self.out_dir / "best"
            if not self._log_started and self._best_state is None and (stale_best / "trainer.json").exists():
                shutil.rmtree(stale_best)  # likewise an earlier run's best, which `eval RUN` would pick
            self._log_started = True

    # -- the loop --------------------------------------------------------------------------
    def fit(self, stop_at: Optional[int] = None) -> list[dict[str, Any]]:
        """Train until `config.steps` (or pause at `stop_at`); return the history.

        At the end (not at a pause) the trainer evaluates once more and, with out_dir, saves a
        checkpoint to out_dir/checkpoint. The schedule always spans `config.steps`.
        """
        from tqdm.auto import tqdm

        config = self.config
        target = config.steps if stop_at is None else min(stop_at, config.steps)
        finishing = target == config.steps and self.step < config.steps
        progress = tqdm(total=config.steps, initial=self.step, desc=f"train {self.model.name}".strip(),
                        disable=not (self.is_main and config.progress), dynamic_ncols=True)
        self._reset_log_window()
        stop = self._patience_exhausted()  # a resumed run that had already stopped stays stopped
        try:
            while self.step < target and not stop:
                self._accumulate(self.train_step())
                progress.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    entry = self._train_entry()
                    self._record(entry)
                    loss = next((v for k, v in entry.items() if k.startswith("train/")), math.nan)
                    progress.set_postfix(loss=f"{loss:.4g}", items_s=f"{entry['items_per_s']:.0f}")
                last_step = self.step == config.steps
                if config.eval_every and self.step % config.eval_every == 0 and not last_step:
                    self._record_eval()
                    stop = self._patience_exhausted()
                if config.sample_every and self.step % config.sample_every == 0:
                    self._save_periodic_samples()
                if config.checkpoint_every and self.step % config.checkpoint_every == 0 and not last_step:
                    self.save_checkpoint()
        finally:
            progress.close()
            # stop the DataLoader workers now; the next fit() restarts them from self.batches
            self._stream = None
        if finishing and self.skipped_steps >= config.steps:
            raise NonFiniteError(f"step {self.step}: all {config.steps} steps had a non-finite loss or "
                                 "gradient norm and were skipped; nothing was learned, so no checkpoint "
                                 f"is written: lower lr (now {config.lr:g}) or check the data for NaN/inf")
        if stop:
            self.stopped_early = True
            self.save_checkpoint()  # its last evaluation was at this very step
        elif finishing:
            self._record_eval()
            self.save_checkpoint()
        return self.history

    def _record_eval(self) -> None:
        """Evaluate (rank 0), then on every rank keep the weights if they are the best so far."""
        self._sync_replica()
        if self.val_set is not None and self.is_main:
            self._record(self.evaluate())
        improved = self.is_main and self.val_set is not None and self.history[-1] is self.best_entry()
        if self.config.keep_best and self._from_main(improved):
            self._keep_best()

    # -- best checkpoint and early stopping ------------------------------------------------
    def _from_main(self, value: Any) -> Any:
        """Rank 0's value on every rank (evaluations, hence best and stop decisions, are rank 0's)."""
        return distributed.gather_objects(value, self.dist)[0]

    def best_metric(self) -> Optional[str]:
        """The history key minimised: config.best_metric, else the first "val/" entry of the first
        evaluation that has one; None when there is none (a GAN without best_metric)."""
        if self.config.best_metric is not None:
            return self.config.best_metric
        for entry in self.history:
            if entry["kind"] == "eval":
                key = next((k for k in entry if k.startswith("val/")), None)
                if key is not None:
                    return key
        return None

    def best_entry(self) -> Optional[dict[str, Any]]:
        """The evaluation entry of the history with the lowest finite best_metric (the earliest on
        ties), or None before any such evaluation."""
        key, best = self.best_metric(), None
        for entry in self.history:
            value = entry.get(key) if entry["kind"] == "eval" else None
            if isinstance(value, (int, float)) and math.isfinite(value) and (best is None or value < best[key]):
                best = entry
        return best

    def evaluations_since_best(self) -> int:
        """Evaluations after the best one (all of them when there is no best yet)."""
        best = self.best_entry()
        evaluations = [e for e in self.history if e["kind"] == "eval"]
        return len(evaluations) if best is None else sum(e["step"] > best["step"] for e in evaluations)

    def _patience_exhausted(self) -> bool:
        patience = self.config.patience
        exhausted = patience is not None and self.is_main and self.evaluations_since_best() >= patience
        return bool(self._from_main(exhausted))

    def _keep_best(self) -> None:
        """Keep the evaluated weights in memory and, with out_dir, the checkpoint in out_dir/best."""
        with self.averaged_weights():
            # whole tensors (all-gathered from the shards under fsdp)
            self._best_state = {k: distributed.full_tensor(v.detach()).to("cpu", copy=True)
                                for k, v in self.model.state_dict().items()}
        if self.out_dir is not None:
            self.save_checkpoint(self.out_dir / "best")

    @contextlib.contextmanager
    def best_weights(self):
        """Context in which the model holds the weights of `best_entry()` (the evaluated ones: EMA
        when on); the current weights come back on exit. After a resume they are read from
        out_dir/best. Raises ValueError when no best was kept (keep_best off, or no evaluation)."""
        from genkernels.train.checkpoint import load_checkpoint

        if self._best_state is None and self.out_dir is not None and (self.out_dir / "best").exists():
            saved = load_checkpoint(self.out_dir / "best", weights_only=True)
            # the EMA holds parameters and buffers; tied aliases absent from the file share storage
            self._best_state = {**saved.model_state, **(saved.ema_state or {})}
        if self._best_state is None:
            raise ValueError("no best weights were kept: needs keep_best=True and an evaluation with "
                             f"{self.best_metric() or 'a val/ metric (or set best_metric)'}")
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._load_weights(self._best_state)
        try:
            yield self.model
        finally:
            self._load_weights(current)

    def _load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """model.load_state_dict(state, strict=False); sharded: each rank copies its slices."""
        if not self.sharded:
            self.model.load_state_dict(state, strict=False)
            return
        targets = self.model.state_dict()
        for name, value in state.items():
            if name in targets:
                distributed.copy_full_into(targets[name], value.to(self.device))

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path: Optional[str | Path] = None) -> Optional[Path]:
        """Save to `path` (default out_dir/checkpoint). Call on every rank; rank 0 writes."""
        from genkernels.train.checkpoint import save_checkpoint

        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / "checkpoint"
        return save_checkpoint(path, self)

    def resume(self, path: str | Path) -> "Trainer":
        """Restore weights, EMA, optimizers, scaler, step, history and every RNG state."""
        from genkernels.train.checkpoint import load_checkpoint, restore_trainer

        restore_trainer(self, load_checkpoint(path, map_location=self.device))
        self._sync_replica()
        self._stream = None
        if self.is_main and self.out_dir is not None:
            # the log restarts from the checkpoint: drop lines written after it was saved
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "w") as log:
                log.writelines(json.dumps(entry) + "\n" for entry in self.history)
            self._log_started = True
        return self


@torch.no_grad()
def validation_losses(model: GenerativeModel, dataset: Dataset, *, batch_size: int = 256,
                      max_items: Optional[int] = None, device: torch.device | str = "cpu",
                      precision: str = "fp32", groups: Optional[list[str]] = None) -> dict[str, float]:
    """Item-weighted mean of every entry of model.loss over the first `max_items` items.

    `groups`: for multi-group models, the loss of each group is computed and merged.
    """
    device = torch.device(device)
    count = min(len(dataset), max_items or len(dataset))
    totals: dict[str, float] = {}
    for start in range(0, count, batch_size):
        indices = range(start, min(start + batch_size, count))
        batch = move_to(default_collate([dataset[i] for i in indices]), device)
        with autocast(device, precision):
            results = [model.loss(batch)] if groups is None else [model.loss(batch, group=g) for g in groups]
        merged: dict[str, torch.Tensor] = {}
        for group, losses in zip(groups or [None], results):
            for key, value in losses.items():
                merged[f"{group}_{key}" if key in merged else key] = value
        for key, value in merged.items():
            totals[key] = totals.get(key, 0.0) + float(value.float().mean()) * len(indices)
    return {key: total / count for key, total in totals.items()}

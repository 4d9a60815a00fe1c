"""TrainConfig: every knob of a training run, saved with each checkpoint."""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Optional

PRECISIONS = ("fp32", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")

# (field, smallest allowed value) of the integer fields
_INT_MINIMUMS = {
    "steps": 1, "batch_size": 1, "warmup_steps": 0, "eval_every": 0, "log_every": 1,
    "sample_every": 0, "checkpoint_every": 0, "seed": 0, "num_workers": 0, "num_samples": 1,
}
_BOOL_FIELDS = ("compile", "progress", "skip_nonfinite", "keep_best")


@dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of a run (the CLI flags map onto these fields).

    steps             optimizer steps (one step = one global batch, all groups stepped once)
    batch_size        global batch; split evenly across ranks under torchrun
    lr                peak learning rate, reached after `warmup_steps` (linear warm-up), then
                      cosine decay to `lr * min_lr_ratio` at `steps`
    weight_decay      AdamW decoupled decay, applied to matrices/kernels only (ndim >= 2);
                      biases, norms and other vectors are not decayed
    betas             AdamW (beta1, beta2)
    grad_clip         max global gradient norm per optimizer group; 0 or None disables clipping
    precision         "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler); both low
                      precisions work on CPU and CUDA
    ema_decay         exponential moving average of the weights used for evaluation, sampling
                      and `load_model`; 0 disables. The decay warms up as min(ema_decay,
                      (1 + n) / (10 + n)) after n updates so short runs are not stuck at init.
    eval_every        steps between evaluations (val loss + model.evaluate); 0: only at the end
    eval_max_items    items of the validation set used per evaluation (None: all)
    log_every         steps between train-loss log lines (losses averaged over the interval)
    sample_every      steps between sample figures under out_dir/samples/; 0 disables
    checkpoint_every  steps between checkpoints in out_dir/checkpoint; 0: only at the end
    compile           torch.compile the loss computation
    device            "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    seed              seeds the weights' noise, the data order and everything random (>= 0)
    out_dir           where metrics.jsonl, samples and checkpoints go; None writes nothing
    num_workers       DataLoader worker processes for fetching items (0: in the main process)
    num_samples       samples drawn for each periodic sample figure
    progress          show a tqdm progress bar (rank 0 only)
    skip_nonfinite    False: a non-finite loss or gradient norm stops training with
                      NonFiniteError naming the step. True: that group's update (and the step's
                      EMA update) is skipped and counted ("skipped_steps" in the log); training
                      still stops after more than 100 skipped steps in a row.
    keep_best         track the evaluation with the lowest `best_metric`: keep its (EMA) weights
                      (`Trainer.best_weights()`) and, with out_dir, its checkpoint in
                      out_dir/best, which `genkernels eval RUN` then uses
    best_metric       the evaluation entry minimised, e.g. "val/loss" or "eval/nll_bpd"; None:
                      the first "val/" entry (the held-out objective). A family without a
                      validation loss (GAN) has no best unless this names one of its metrics
    patience          stop training after this many evaluations in a row without a new best
                      (early stopping; the final checkpoint is written at the stop); None: never
    strategy          how several processes (torchrun) share the work: "ddp" (every rank holds
                      the whole model, gradients all-reduced) or "fsdp" (FSDP2: parameters,
                      gradients and optimizer state sharded across ranks per block, sharded
                      checkpoints); one process ignores it
    """

    # CPU-friendly: `genkernels train vae` takes a few minutes on 2 cores (families override these
    # through GenerativeModel.train_defaults)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: Optional[float] = 1.0
    precision: str = "fp32"
    ema_decay: float = 0.999
    eval_every: int = 250
    eval_max_items: Optional[int] = 1024
    log_every: int = 25
    sample_every: int = 0
    checkpoint_every: int = 500
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    out_dir: Optional[str] = None
    num_workers: int = 0
    num_samples: int = 64
    progress: bool = True
    skip_nonfinite: bool = False
    keep_best: bool = True
    best_metric: Optional[str] = None
    patience: Optional[int] = None
    strategy: str = "ddp"

    def __post_init__(self):
        self.validate()
        # canonical types, so to_dict() is plain JSON and a reloaded config compares equal
        for name in _INT_MINIMUMS:
            setattr(self, name, int(getattr(self, name)))
        for name in ("lr", "weight_decay", "min_lr_ratio", "ema_decay"):
            setattr(self, name, float(getattr(self, name)))
        self.betas = tuple(float(b) for b in self.betas)
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
        if self.eval_max_items is not None:
            self.eval_max_items = int(self.eval_max_items)
        if self.patience is not None:
            self.patience = int(self.patience)
        self.device = str(self.device)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)

    def validate(self) -> None:
        """Raise TypeError (wrong type) or ValueError (out of range) naming the first bad field,
        the expected and the received value."""
        for name, minimum in _INT_MINIMUMS.items():
            _check_int(name, getattr(self, name), minimum)
        _check_real("lr", self.lr, "a finite number > 0", lambda v: v > 0)
        _check_real("weight_decay", self.weight_decay, "a finite number >= 0", lambda v: v >= 0)
        _check_real("min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        _check_real("ema_decay", self.ema_decay, "a number in [0, 1) (0 disables the EMA)",
                    lambda v: 0 <= v < 1)
        if self.grad_clip is not None:
            _check_real("grad_clip", self.grad_clip, "a finite number > 0, or 0 / None to disable clipping",
                        lambda v: v >= 0)
        betas = self.betas
        if (isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2
                or not all(_is_real(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {betas!r}")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise ValueError(f"TrainConfig.strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {self.strategy!r}")
        if self.eval_max_items is not None:
            _check_int("eval_max_items", self.eval_max_items, 1, or_none=True)
        if self.patience is not None:
            _check_int("patience", self.patience, 1, or_none=True)
        if self.best_metric is not None and (not isinstance(self.best_metric, str) or not self.best_metric):
            error = TypeError if not isinstance(self.best_metric, str) else ValueError
            raise error(f"TrainConfig.best_metric must be a metric name such as 'val/loss' or "
                        f"'eval/nll_bpd', or None, got {self.best_metric!r}")
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"TrainConfig.{name} must be True or False, got {value!r} "
                                f"({type(value).__name__})")
        device = self.device
        if not (isinstance(device, str) or type(device).__name__ == "device") or str(device) == "":
            raise TypeError(f"TrainConfig.device must be a string such as 'auto', 'cpu' or 'cuda:0', "
                            f"got {device!r} ({type(device).__name__})")
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise TypeError(f"TrainConfig.out_dir must be a path or None, got {self.out_dir!r} "
                            f"({type(self.out_dir).__name__})")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


def _is_real(value: Any) -> bool:
    """A real number that is not a bool (True is an int in Python, never a step count)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, or_none: bool = False) -> None:
    expected = f"an int >= {minimum}" + (" or None" if or_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"TrainConfig.{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"TrainConfig.{name} must be {expected}, got {value!r}")


def _check_real(name: str, value: Any, expected: str, in_range) -> None:
    if not _is_real(value):
        raise TypeError(f"TrainConfig.{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or not in_range(value):
        raise ValueError(f"TrainConfig.{name} must be {expected}, got {value!r}")

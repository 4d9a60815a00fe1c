"""TrainConfig: every knob of a training run, saved with each checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

PRECISIONS = ("fp32", "bf16", "fp16")


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
    grad_clip         max global gradient norm per optimizer group; 0 disables clipping
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
    seed              seeds the weights' noise, the data order and everything random
    out_dir           where metrics.jsonl, samples and checkpoints go; None writes nothing
    num_workers       DataLoader worker processes for fetching items (0: in the main process)
    num_samples       samples drawn for each periodic sample figure
    progress          show a tqdm progress bar (rank 0 only)
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
    grad_clip: float = 1.0
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

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {value!r}")
        non_negative = {
            "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
            "grad_clip": self.grad_clip, "eval_every": self.eval_every,
            "log_every": self.log_every, "sample_every": self.sample_every,
            "checkpoint_every": self.checkpoint_every, "num_workers": self.num_workers,
            "num_samples": self.num_samples,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {value!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.eval_max_items is not None and self.eval_max_items <= 0:
            raise ValueError(f"TrainConfig.eval_max_items must be > 0 or None, got {self.eval_max_items!r}")

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

"""Training toolkit: TrainConfig, Trainer and checkpoints (safetensors + JSON); figures live in genkernels.figures."""
from genkernels.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from genkernels.train.config import TrainConfig
from genkernels.train.trainer import NonFiniteError, Trainer

__all__ = ["TrainConfig", "Trainer", "NonFiniteError", "save_checkpoint", "load_checkpoint", "load_model"]

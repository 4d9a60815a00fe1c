"""Training toolkit: TrainConfig, Trainer, checkpoints (safetensors + JSON) and shared figures."""
from genkernels.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from genkernels.train.config import TrainConfig
from genkernels.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "save_checkpoint", "load_checkpoint", "load_model"]

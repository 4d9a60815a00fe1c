"""Model zoo. Each family lives in one file; REGISTRY maps the CLI name to "module:Class"."""
from __future__ import annotations

import importlib

from genkernels.models.base import GenerativeModel, ImageGenerativeModel

# Families register here as they land (name -> "module:Class").
REGISTRY: dict[str, str] = {}
REGISTRY["vae"] = "genkernels.models.vae:VAE"
REGISTRY["m2"] = "genkernels.models.m2:M2"
REGISTRY["gan"] = "genkernels.models.gan:GAN"
REGISTRY["pixelcnn"] = "genkernels.models.pixelcnn:PixelCNN"
REGISTRY["wavenet"] = "genkernels.models.wavenet:WaveNet"
REGISTRY["maf"] = "genkernels.models.maf:MAF"
REGISTRY["realnvp"] = "genkernels.models.realnvp:RealNVP"
REGISTRY["glow"] = "genkernels.models.glow:Glow"
REGISTRY["gpt"] = "genkernels.models.gpt:GPT"
REGISTRY["seq2seq"] = "genkernels.models.seq2seq:Seq2SeqTransformer"
REGISTRY["bert"] = "genkernels.models.bert:BERT"
REGISTRY["diffusion"] = "genkernels.models.diffusion:Diffusion"
REGISTRY["style"] = "genkernels.models.style_transfer:StyleTransfer"
REGISTRY["forecast"] = "genkernels.models.forecast:LSTMForecaster"
REGISTRY["music-lstm"] = "genkernels.models.music_lstm:MusicLSTM"
REGISTRY["vqvae"] = "genkernels.models.vqvae:VQVAE"
REGISTRY["lstm"] = "genkernels.models.char_lstm:CharLSTM"
REGISTRY["smiles-lstm"] = "genkernels.models.smiles_lstm:SmilesLSTM"
REGISTRY["smiles-gpt"] = "genkernels.models.smiles_gpt:SmilesGPT"
REGISTRY["smiles-vae"] = "genkernels.models.smiles_vae:SmilesVAE"


def get_model_class(name: str) -> type[GenerativeModel]:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY)) or 'none'}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["GenerativeModel", "ImageGenerativeModel", "REGISTRY", "get_model_class"]


def __getattr__(name):
    """A registered family's class by its class name (genkernels.models.StyleTransfer), imported on first use."""
    for target in REGISTRY.values():
        module, cls = target.split(":")
        if cls == name:
            return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module 'genkernels.models' has no attribute {name!r}")

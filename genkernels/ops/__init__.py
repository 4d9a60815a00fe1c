"""Every public fused op, one import away: `from genkernels.ops import q_sample, attention, ...`.

Each op file holds one op family, in the same order: the pure-PyTorch reference, the kernel
launchers, the autograd functions, the registration (ops/_library.define or register, which also
routes each call) and the public function. The attention ops load on first use, so importing
genkernels.ops does not import Triton.
"""
import importlib
import sys
import types

from genkernels.ops.actnorm import actnorm
from genkernels.ops.adaln import adaln_modulate
from genkernels.ops.affine_coupling import affine_coupling
from genkernels.ops.diffusion_loss import diffusion_loss
from genkernels.ops.dpm_solver_step import dpm_solver_step
from genkernels.ops.euler_step import euler_step
from genkernels.ops.gated_activation import gated_activation
from genkernels.ops.group_norm_act import group_norm_act
from genkernels.ops.philox import philox_normal
from genkernels.ops.q_sample import q_sample
from genkernels.ops.reparam_kl import reparam_kl
from genkernels.ops.rq_spline import rq_spline
from genkernels.ops.sampler_step import ddim_step, ddpm_step
from genkernels.ops.gelu_tanh import gelu_tanh
from genkernels.ops.gram_style_loss import gram_matrix, gram_style_loss
from genkernels.ops.layer_norm import layer_norm
from genkernels.ops.linear_cross_entropy import linear_cross_entropy
from genkernels.ops.lstm_cell import lstm_cell, lstm_dropout_mask
from genkernels.ops.layernorm_lstm_cell import layernorm_lstm_cell
from genkernels.ops.rms_norm import rms_norm
from genkernels.ops.rotary import rotary, rotary_tables
from genkernels.ops.swiglu import swiglu

_LAZY = {
    "attention": "genkernels.ops.attention",
    "attention_varlen": "genkernels.ops.attention",
    "attention_decode": "genkernels.ops.attention_decode",
    "masked_conv2d": "genkernels.ops.masked_conv",
    "causal_conv1d": "genkernels.ops.causal_conv1d",
}

__all__ = ["gated_activation", "affine_coupling", "actnorm",
           "q_sample", "diffusion_loss", "ddpm_step", "ddim_step", "philox_normal", "reparam_kl", "rq_spline",
           "group_norm_act", "adaln_modulate", "dpm_solver_step", "euler_step", "rms_norm", "layer_norm", "swiglu", "gelu_tanh", "rotary", "rotary_tables",
           "linear_cross_entropy", "lstm_cell", "lstm_dropout_mask", "layernorm_lstm_cell", "gram_style_loss", "gram_matrix", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genkernels.ops' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _OpsModule(types.ModuleType):
    """`attention` and `attention_decode` are both a public function and the submodule defining it;
    importing the submodule binds the package attribute to the module, so hand out the function."""

    def __getattribute__(self, name):
        value = super().__getattribute__(name)
        if name in _LAZY and isinstance(value, types.ModuleType):
            return getattr(value, name)
        return value


sys.modules[__name__].__class__ = _OpsModule

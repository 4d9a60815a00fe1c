from genkernels.nn.attention import CrossAttention, KVCache, MultiheadAttention, SelfAttention  # noqa: F401
from genkernels.nn.causal_conv import CausalConv1d, WaveNetLayer  # noqa: F401
from genkernels.nn.coupling import AdditiveCoupling, AffineCoupling, SplineCoupling  # noqa: F401
from genkernels.nn.diffusion_blocks import (  # noqa: F401
    AttentionBlock,
    CrossAttentionBlock,
    Downsample,
    ResBlock,
    TimestepMLP,
    Upsample,
    timestep_embedding,
)
from genkernels.nn.text_encoder import ByteTextEncoder  # noqa: F401
from genkernels.nn.transformer_layers import (  # noqa: F401
    GeluMLP,
    LayerNorm,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
)
from genkernels.nn.flow_layers import ActNorm, InvertibleConv1x1, Permute, Squeeze  # noqa: F401
from genkernels.nn.flow_sequential import FlowSequential  # noqa: F401
from genkernels.nn.swap import SwapReport, swap_layers  # noqa: F401
from genkernels.nn.style import HookedFeatureExtractor, RandomFeatureExtractor, TransformerNet  # noqa: F401
from genkernels.nn.gated import GatedActivation  # noqa: F401
from genkernels.nn.latent import GaussianLatent  # noqa: F401
from genkernels.nn.lstm import LSTM, LSTMCell  # noqa: F401
from genkernels.nn.masked_conv import GatedMaskedConv2d, MaskedConv2d  # noqa: F401
from genkernels.nn.norm import AdaLayerNorm, GroupNormAct, modulate  # noqa: F401
from genkernels.nn.vq import VectorQuantizer  # noqa: F401
from genkernels.nn.likelihoods import (  # noqa: F401
    BinomialLikelihood,
    CategoricalLikelihood,
    DiscreteLikelihood,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    get_likelihood,
)

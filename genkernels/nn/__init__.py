from genkernels.nn.attention import CrossAttention, KVCache, MultiheadAttention, SelfAttention  # noqa: F401
from genkernels.nn.latent import GaussianLatent  # noqa: F401

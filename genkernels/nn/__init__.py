from genkernels.nn.attention import CrossAttention, KVCache, MultiheadAttention, SelfAttention  # noqa: F401

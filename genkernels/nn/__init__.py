from genkernels.nn.attention import CrossAttention, KVCache, MultiheadAttention, SelfAttention  # noqa: F401
from genkernels.nn.latent import GaussianLatent  # noqa: F401
from genkernels.nn.likelihoods import (  # noqa: F401
    BinomialLikelihood,
    CategoricalLikelihood,
    DiscreteLikelihood,
    DiscretizedLogisticLikelihood,
    get_likelihood,
)

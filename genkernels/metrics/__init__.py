"""Evaluation metrics. Each function's docstring states its units and what it averages.

nll                likelihood units: nats -> bits, bits per dimension, categorical NLL,
                   dequantised continuous NLL, the IWAE bound
text               bits per byte / char, perplexity, zlib and lzma baselines
samples2d          MMD and energy distance between sample sets (2D toy data)
density            Gaussian and KDE held-out log-likelihood baselines (nats per point), anomaly ROC AUC
digits_classifier  a cached small CNN on the 8x8 digits: class accuracy of conditional samples,
                   features and a Fréchet distance (FID-style) in its feature space
music              four-voice music: pitch-class / note-length / interval histogram distances, notes in
                   key, mean polyphony, random and unigram baselines
molecules          the MOSES metrics of generated SMILES (validity, uniqueness, novelty, FCD, SNN, Frag,
                   Scaf, IntDiv, filters, property distances) and MOSES's published table (needs [chem])
ngram              a Witten-Bell n-gram model over token sequences (the sequence families' baseline)
"""
from genkernels.metrics.density import anomaly_auc, gaussian_loglik, kde_loglik, select_kde_bandwidth
from genkernels.metrics.digits_classifier import (
    class_accuracy,
    digits_classifier,
    digits_features,
    digits_sample_metrics,
    frechet_distance,
)
from genkernels.metrics.nll import (
    bits_per_dim,
    categorical_bits_per_dim,
    categorical_nll,
    dequantize,
    dequantized_nll,
    iwae_bound,
    nats_to_bits,
)
from genkernels.metrics.music import compare as compare_music
from genkernels.metrics.molecules import PUBLISHED_MOSES, format_moses_table, moses_metrics
from genkernels.metrics.music import music_statistics
from genkernels.metrics.ngram import NGramModel
from genkernels.metrics.samples2d import energy_distance, mmd
from genkernels.metrics.text import bits_per_byte, bits_per_char, compression_baselines, perplexity

__all__ = [
    "nats_to_bits", "bits_per_dim", "categorical_nll", "categorical_bits_per_dim", "dequantize",
    "dequantized_nll", "iwae_bound",
    "bits_per_byte", "bits_per_char", "perplexity", "compression_baselines",
    "mmd", "energy_distance",
    "gaussian_loglik", "kde_loglik", "select_kde_bandwidth", "anomaly_auc",
    "digits_classifier", "class_accuracy", "digits_features", "frechet_distance", "digits_sample_metrics",
    "music_statistics", "compare_music",
    "moses_metrics", "format_moses_table", "PUBLISHED_MOSES", "NGramModel",
]

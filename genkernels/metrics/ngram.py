"""An n-gram language model over token sequences: the simple baseline the sequence families (SMILES,
text, music) are measured against, for held-out NLL and for samples.

Witten-Bell interpolation (Witten & Bell 1991; Chen & Goodman 1998, sec. 2.5): for a history h of
n - 1 tokens and its shortening h' (the last n - 2),

    P(w | h) = (c(h, w) + T(h) P(w | h')) / (c(h) + T(h))

where c(h, w) counts w after h, c(h) = sum_w c(h, w) and T(h) is the number of distinct tokens seen
after h; an unseen history falls through to P(w | h'). The recursion ends in the unigram
distribution interpolated the same way with the uniform one over the vocabulary, so every token has
non-zero probability. Sequences are padded on the left with n - 1 BOS tokens and end with EOS,
which the model predicts (a sample ends when it draws EOS).

MOSES's "NGram" baseline (Polykovskiy et al. 2020) is this kind of model over SMILES characters.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

from genkernels.models._validate import check_int


class NGramModel:
    """n-gram model with Witten-Bell interpolation over token ids in [0, vocab_size).

    fit(sequences)          sequences: iterables of token ids, without BOS/EOS
    nll(sequences)          (total nats, predicted tokens) over the sequences, EOS included
    sample(n, max_len, rng) lists of token ids (EOS not included; cut at max_len)
    """

    def __init__(self, order: int, vocab_size: int, bos: int, eos: int):
        self.order = check_int("order", order, 1)
        self.vocab_size = check_int("vocab_size", vocab_size, 2)
        for name, value in (("bos", bos), ("eos", eos)):
            if not 0 <= check_int(name, value, 0) < self.vocab_size:
                raise ValueError(f"{name} must be a token id in [0, {self.vocab_size}), got {value}")
        self.bos, self.eos = bos, eos
        # counts[k][history of k tokens] = Counter of next tokens, k = 0 .. order - 1
        self.counts: list[dict[tuple[int, ...], Counter]] = [defaultdict(Counter) for _ in range(self.order)]
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def _padded(self, sequence: Iterable[int]) -> list[int]:
        tokens = [int(t) for t in sequence]
        for t in tokens:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {t}")
        return [self.bos] * (self.order - 1) + tokens + [self.eos]

    def fit(self, sequences: Iterable[Iterable[int]]) -> "NGramModel":
        for sequence in sequences:
            tokens = self._padded(sequence)
            for i in range(self.order - 1, len(tokens)):
                for k in range(self.order):
                    self.counts[k][tuple(tokens[i - k:i])][tokens[i]] += 1
        self._cache.clear()
        if not self.counts[0]:
            raise ValueError("sequences must hold at least one sequence")
        return self

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """P(. | the last order - 1 tokens of history) as a float64 (vocab_size,) array summing to 1."""
        history = tuple(int(t) for t in history[len(history) - (self.order - 1):]) if self.order > 1 else ()
        cached = self._cache.get(history)
        if cached is not None:
            return cached
        if history:
            lower = self.distribution(history[1:])
        else:
            lower = np.full(self.vocab_size, 1.0 / self.vocab_size)
        seen = self.counts[len(history)].get(history)
        if not seen:
            probs = lower
        else:
            total, types = sum(seen.values()), len(seen)
            probs = lower * types
            for token, count in seen.items():
                probs[token] += count
            probs = probs / (total + types)
        self._cache[history] = probs
        return probs

    def nll(self, sequences: Iterable[Iterable[int]]) -> tuple[float, int]:
        """(total negative log-likelihood in nats, number of predicted tokens incl. EOS)."""
        total, count = 0.0, 0
        for sequence in sequences:
            tokens = self._padded(sequence)
            for i in range(self.order - 1, len(tokens)):
                total -= math.log(self.distribution(tokens[i - self.order + 1:i])[tokens[i]])
                count += 1
        return total, count

    def sample(self, n: int, max_len: int, seed: int = 0) -> list[list[int]]:
        """n sequences drawn token by token until EOS (or max_len tokens), seeded."""
        n, max_len = check_int("n", n, 0), check_int("max_len", max_len, 1)
        rng = np.random.default_rng(check_int("seed", seed, 0))
        out = []
        for _ in range(n):
            tokens = [self.bos] * (self.order - 1)
            while len(tokens) - (self.order - 1) < max_len:
                probs = self.distribution(tokens[len(tokens) - self.order + 1:] if self.order > 1 else [])
                token = int(rng.choice(self.vocab_size, p=probs))
                if token == self.eos:
                    break
                tokens.append(token)
            out.append(tokens[self.order - 1:])
        return out


__all__ = ["NGramModel"]

import math

import numpy as np
import pytest

from genkernels.metrics.ngram import NGramModel


def test_distributions_sum_to_one_and_follow_witten_bell():
    model = NGramModel(2, vocab_size=5, bos=0, eos=1).fit([[2, 3], [2, 3], [2, 4]])
    for history in ([0], [2], [3], [4]):
        assert math.isclose(model.distribution(history).sum(), 1.0, rel_tol=1e-12)
    unigram = model.distribution([])  # counts 2:3, 3:2, 4:1, eos:3 over 9 tokens, 4 types, uniform 1/5
    assert math.isclose(unigram[2], (3 + 4 / 5) / (9 + 4))
    # after 2: 3 twice, 4 once (3 tokens, 2 types)
    assert math.isclose(model.distribution([2])[3], (2 + 2 * unigram[3]) / (3 + 2))
    assert model.distribution([2])[3] > model.distribution([2])[4] > model.distribution([2])[1]


def test_nll_matches_the_sum_of_log_probabilities():
    model = NGramModel(3, vocab_size=6, bos=0, eos=1).fit([[2, 3, 4], [2, 3, 5], [3, 4]])
    total, count = model.nll([[2, 3, 4]])
    expected = -sum(math.log(model.distribution(h)[t]) for h, t in (([0, 0], 2), ([0, 2], 3), ([2, 3], 4),
                                                                      ([3, 4], 1)))
    assert count == 4 and math.isclose(total, expected)


def test_samples_are_seeded_and_reproduce_a_deterministic_corpus():
    model = NGramModel(3, vocab_size=6, bos=0, eos=1).fit([[2, 3, 4, 5]] * 50)
    samples = model.sample(20, max_len=10, seed=0)
    assert samples == model.sample(20, max_len=10, seed=0)
    assert sum(s == [2, 3, 4, 5] for s in samples) >= 15 and all(len(s) <= 10 for s in samples)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bos must be a token id"):
        NGramModel(2, vocab_size=3, bos=3, eos=1)
    model = NGramModel(2, vocab_size=3, bos=0, eos=1)
    with pytest.raises(ValueError, match="at least one"):
        model.fit([])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 3\)"):
        model.fit([[7]])

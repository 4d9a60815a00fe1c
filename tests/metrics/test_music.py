import math

import numpy as np
import pytest
import torch

from genkernels.data.music import encode_events, encode_grid_tokens, notes_to_grid
from genkernels.metrics.music import (
    compare, estimate_key, in_key_mask, js_divergence, key_name, music_statistics, random_pieces,
    unigram_pieces, unigram_token_nll,
)

C_MAJOR = (60, 62, 64, 65, 67, 69, 71, 72)


def scale_piece(pitches=C_MAJOR, length=4):
    """The soprano plays `pitches` as notes of `length` 16ths; the bass holds the tonic for the first half."""
    notes = [(i * length, length, p, 0) for i, p in enumerate(pitches)]
    notes.append((0, len(pitches) * length // 2, pitches[0] - 24, 3))
    return notes_to_grid(np.array(notes))


def test_statistics_of_a_hand_made_piece():
    grid, onsets = scale_piece()
    stats = music_statistics([(grid, onsets)])
    expected_pc = np.zeros(12)
    for pitch in C_MAJOR + (36,):
        expected_pc[pitch % 12] += 1
    np.testing.assert_allclose(stats["pitch_class_histogram"], expected_pc / 9)
    expected_length = np.zeros(17)
    expected_length[3], expected_length[15] = 8 / 9, 1 / 9  # eight 4-step notes and one 16-step note
    np.testing.assert_allclose(stats["note_length_histogram"], expected_length)
    expected_interval = np.zeros(14)
    expected_interval[[2, 1]] = [5 / 7, 2 / 7]  # C D E F G A B C: five whole steps, two half steps
    np.testing.assert_allclose(stats["interval_histogram"], expected_interval)
    assert stats["in_key"] == 1.0
    assert stats["mean_polyphony"] == pytest.approx(1.5)  # 1 voice throughout, a 2nd for half the time
    assert (stats["pieces"], stats["notes"], stats["steps"]) == (1, 9, 32)


def test_every_input_form_gives_the_same_statistics():
    grid, onsets = scale_piece()
    reference = music_statistics([(grid, onsets)])
    for pieces, form in (([grid], "events"), ([encode_events(grid, onsets)], "events"),
                         ([torch.from_numpy(encode_grid_tokens(grid, onsets))], "grid")):
        stats = music_statistics(pieces, form=form)
        for key in ("pitch_class_histogram", "note_length_histogram", "interval_histogram"):
            np.testing.assert_array_equal(stats[key], reference[key])
        assert stats["in_key"] == reference["in_key"]
    with pytest.raises(TypeError, match="list of pieces"):
        music_statistics(grid)
    with pytest.raises(ValueError, match="empty"):
        music_statistics([])


def test_key_estimate_and_in_key():
    assert key_name(*estimate_key(*scale_piece())) == "C major"
    a_minor = (57, 59, 60, 62, 64, 65, 68, 69, 64, 57)  # with the leading tone G#
    assert key_name(*estimate_key(*scale_piece(a_minor))) == "A minor"
    assert in_key_mask([60, 61, 66, 71], 0, "major").tolist() == [True, False, False, True]
    assert in_key_mask([68, 66, 70], 9, "minor").tolist() == [True, True, False]  # raised 7th and 6th
    # A chromatic line: 7 of its 12 notes fit any major key, at most 9 any minor one.
    chromatic = music_statistics([scale_piece(tuple(range(60, 72)))])
    assert 7 / 13 <= chromatic["in_key"] <= 10 / 13


def test_distances():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([1, 1], [2, 2]) == 0.0
    assert js_divergence([1, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(
        0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25 * math.log2(2))
    piece = scale_piece()
    same = compare([piece], [piece])
    assert all(same[k] == 0 for k in ("pitch_class_js", "note_length_l1", "interval_js", "in_key_gap",
                                      "polyphony_gap"))
    shifted = compare([scale_piece(tuple(p + 1 for p in C_MAJOR))], [piece])
    # A semitone up: of 9 notes each, the shared mass is F (1) and C (1 of the original 3): L1 = 2 - 2 * 2 / 9.
    assert shifted["pitch_class_l1"] == pytest.approx(2 - 4 / 9)
    assert shifted["note_length_js"] == 0 and shifted["interval_js"] == 0


def test_baselines():
    reference = [scale_piece()]
    noise = random_pieces(3, steps=64, seed=0)
    assert len(noise) == 3 and noise[0][0].shape == (64, 4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(noise, random_pieces(3, steps=64, seed=0)))
    assert music_statistics(noise)["mean_polyphony"] == 4.0
    unigram = unigram_pieces(reference, 2, steps=64, seed=1)
    pitches = set(np.unique(np.concatenate([g[g > 0] for g, _ in unigram])).tolist())
    assert pitches <= set(C_MAJOR) | {36}
    assert compare(unigram, reference)["pitch_class_js"] < compare(noise, reference)["pitch_class_js"]
    assert unigram_token_nll([0, 0, 1], [0], vocab_size=2) == pytest.approx(-math.log(3 / 5))

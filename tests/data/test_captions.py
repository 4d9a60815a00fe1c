"""Digit captions generated from templates, and parsing them back to their digit."""
import pytest
import torch

from genkernels.data.captions import DIGIT_WORDS, TEMPLATES, caption_label, digit_captions


def test_every_template_round_trips_every_digit():
    labels = torch.arange(10).repeat(60)
    captions = digit_captions(labels, torch.Generator().manual_seed(0))
    assert len(captions) == 600 and all(isinstance(c, str) and c for c in captions)
    assert [caption_label(c) for c in captions] == labels.tolist()
    assert len(set(captions)) >= 10 * len(TEMPLATES) - 10  # (nearly) every template was drawn


def test_captions_are_seeded_and_read_naturally():
    a = digit_captions([7, 8, 1], torch.Generator().manual_seed(1))
    assert a == digit_captions([7, 8, 1], torch.Generator().manual_seed(1))
    everything = set(digit_captions([8, 1] * 200, torch.Generator().manual_seed(0)))
    assert "a handwritten seven" in set(digit_captions([7] * 200, torch.Generator().manual_seed(0)))
    assert "a picture of an 8" in everything and "a drawing of an eight" in everything
    assert "a drawing of a one" in everything and not any("an one" in c for c in everything)
    assert digit_captions(3, torch.Generator().manual_seed(0))[0] in {t.format(
        word="three", digit="3", a_word="a three", a_digit="a 3") for t in TEMPLATES}


@pytest.mark.parametrize("text, label", [
    ("a handwritten seven", 7), ("7", 7), ("seven", 7), ("the digit 7", 7), ("Seven!", 7),
    ("THE NUMBER ZERO", 0), ("a 3 written by hand", 3), ("a cat", None), ("", None), ("3 or 4", None),
    ("10", None), ("3.5", None), ("seventeen", None), ("three, 3", 3), ("someone", None),
])
def test_caption_label(text, label):
    assert caption_label(text) == label


def test_bad_input():
    with pytest.raises(ValueError, match="digits 0..9"):
        digit_captions([10])
    with pytest.raises(TypeError, match="integer"):
        digit_captions(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="ints 0..9"):
        digit_captions(["7"])
    with pytest.raises(TypeError, match="generator"):
        digit_captions([1], generator=0)
    with pytest.raises(TypeError, match="text must be a str"):
        caption_label(7)
    assert len(DIGIT_WORDS) == 10

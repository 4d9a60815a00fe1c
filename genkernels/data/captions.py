"""Captions for the digits, generated in code from templates (no download, no text corpus).

`digit_captions(labels)` turns class labels 0..9 into short captions such as "a handwritten
seven", "7", "seven", "the digit 7" or "a picture of an 8" (a template drawn per label), so a
text-conditioned diffusion model can train on the labelled digits. `caption_label(text)` parses a
caption back to the digit it names (None when it names none, or two different ones): the class
the metrics check samples drawn from a caption against.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {word}: "seven"; {digit}: "7"; {a_word} / {a_digit}: the word / digit with its article ("an eight", "an 8")
TEMPLATES = (
    "a handwritten {word}",
    "{digit}",
    "{word}",
    "the digit {digit}",
    "the digit {word}",
    "a picture of {a_digit}",
    "a drawing of {a_word}",
    "the number {word}",
    "handwritten digit {digit}",
    "{a_word}, written by hand",
)

_WORD_PATTERN = re.compile(r"\b(" + "|".join(DIGIT_WORDS) + r")\b")
_DIGIT_PATTERN = re.compile(r"(?<![0-9.])([0-9])(?![0-9.])")


def _article(word: str) -> str:
    return "an" if word in ("eight", "8") else "a"  # "a one": by sound, not by letter


def _as_label_list(labels) -> list[int]:
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer digit classes, got dtype {labels.dtype}")
        values = labels.reshape(-1).tolist()
    elif isinstance(labels, int) and not isinstance(labels, bool):
        values = [labels]
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        values = list(labels)
    else:
        raise TypeError(f"labels must be a sequence or tensor of ints 0..9, got {type(labels).__name__}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"labels must be ints 0..9, got {value!r} ({type(value).__name__})")
        if not 0 <= value <= 9:
            raise ValueError(f"labels must be digits 0..9, got {value}")
    return values


def digit_captions(labels, generator: torch.Generator | None = None) -> list[str]:
    """One caption per label: labels (N,) ints 0..9 (tensor, sequence or one int) -> N strings.

    Each caption uses a template from TEMPLATES drawn uniformly with `generator` (a CPU
    torch.Generator; None: torch's global RNG), e.g. 7 -> "a handwritten seven", "7", "seven",
    "the digit 7", "a picture of a 7".
    """
    values = _as_label_list(labels)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    choices = torch.randint(0, len(TEMPLATES), (len(values),), generator=generator).tolist()
    captions = []
    for value, choice in zip(values, choices):
        word, digit = DIGIT_WORDS[value], str(value)
        captions.append(TEMPLATES[choice].format(word=word, digit=digit, a_word=f"{_article(word)} {word}",
                                                 a_digit=f"{_article(digit)} {digit}"))
    return captions


def caption_label(text: str) -> int | None:
    """The digit a caption names, or None: "a handwritten seven" -> 7, "the digit 3" -> 3,
    "Seven!" -> 7, "a cat" -> None, "3 or 4" -> None (two different digits). Case-insensitive;
    a digit counts as a lone character 0-9 (so "10" or "3.5" name none)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.lower()
    found = {DIGIT_WORDS.index(m) for m in _WORD_PATTERN.findall(text)}
    found |= {int(m) for m in _DIGIT_PATTERN.findall(text)}
    return found.pop() if len(found) == 1 else None


__all__ = ["DIGIT_WORDS", "TEMPLATES", "digit_captions", "caption_label"]

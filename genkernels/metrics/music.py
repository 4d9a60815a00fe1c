"""Musical statistics of four-voice pieces, and distances between a sample set and a reference.

Pieces are what genkernels.data.music produces: a Piece, a (grid, onsets) pair, a grid (T, 4) of
MIDI pitches (0 = rest; a note starts where the pitch changes), or 1-D tokens (decoded as event
tokens, or as grid tokens with form="grid"). Statistics pool all notes / steps of a set:

pitch-class histogram   share of notes (each note once, whatever its length) on each of the 12
                        pitch classes (C = 0)
note-length histogram   share of notes lasting 1, 2, ..., 16 sixteenth steps, last bin: longer
in key                  share of notes inside the key of their piece; the key is estimated per
                        piece by the Krumhansl-Schmuckler method (duration-weighted pitch-class
                        profile correlated with the 24 rotated Krumhansl-Kessler profiles); a
                        minor key admits its natural scale plus the raised 6th and 7th
melodic intervals       share of steps from one note to the next in the same voice by size,
                        0..12 semitones (up or down alike), last bin: larger (not in the issue;
                        added because unigram baselines match the three histograms above)
mean polyphony          voices sounding per 16th step (0..4)

Distances are Jensen-Shannon divergences in bits (0 = same histogram, 1 = disjoint) and L1 (0..2).
`random_pieces` and `unigram_pieces` make the baselines a model should beat; held-out real
pieces against training pieces give the floor.
"""
from __future__ import annotations

import numpy as np
import torch

from genkernels.data.music import (
    NUM_VOICES,
    Piece,
    _as_grid,
    decode_events,
    decode_grid_tokens,
    grid_to_notes,
    notes_to_grid,
)

# Krumhansl-Kessler key profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 9, 11)  # natural minor + raised 6th and 7th
NOTE_LENGTH_BINS = 17  # 1..16 steps, then "longer"
INTERVAL_BINS = 14  # 0..12 semitones, then "larger"
_PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _piece_arrays(piece, form: str = "events") -> tuple[np.ndarray, np.ndarray]:
    if isinstance(piece, Piece):
        return _as_grid(piece.grid, piece.onsets)
    if isinstance(piece, tuple) and len(piece) == 2:
        return _as_grid(*piece)
    array = piece.detach().cpu().numpy() if isinstance(piece, torch.Tensor) else np.asarray(piece)
    if array.ndim == 1:
        if form == "events":
            return decode_events(array)
        if form == "grid":
            return decode_grid_tokens(array)
        raise ValueError(f"form must be 'events' or 'grid', got {form!r}")
    return _as_grid(array)


def _as_pieces(pieces, form: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(pieces, (Piece, tuple)) or (hasattr(pieces, "ndim") and pieces.ndim == 2
                                               and pieces.shape[-1] == NUM_VOICES):
        raise TypeError("pieces must be a list of pieces (wrap a single piece in a list)")
    result = [_piece_arrays(p, form) for p in pieces]
    if not result:
        raise ValueError("pieces is empty")
    return result


def estimate_key(grid, onsets=None) -> tuple[int, str]:
    """(tonic pitch class 0..11, "major" | "minor") by Krumhansl-Schmuckler; (0, "major") for silence."""
    grid, onsets = _as_grid(grid, onsets)
    sounding = grid[grid > 0]
    profile = np.bincount(sounding % 12, minlength=12).astype(np.float64)  # duration-weighted
    if profile.std() == 0:
        return 0, "major"
    best = (-2.0, 0, "major")
    for mode, reference in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for tonic in range(12):
            score = np.corrcoef(profile, np.roll(reference, tonic))[0, 1]
            if score > best[0]:
                best = (score, tonic, mode)
    return best[1], best[2]


def key_name(tonic: int, mode: str) -> str:
    return f"{_PITCH_NAMES[tonic % 12]} {mode}"


def in_key_mask(pitches, tonic: int, mode: str) -> np.ndarray:
    """Boolean mask: which MIDI pitches lie in the key (see the module doc for minor)."""
    scale = _MAJOR_SCALE if mode == "major" else _MINOR_SCALE
    allowed = np.zeros(12, bool)
    allowed[[(tonic + s) % 12 for s in scale]] = True
    return allowed[np.asarray(pitches, dtype=np.int64) % 12]


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(values, minlength=bins)[:bins].astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def music_statistics(pieces, form: str = "events") -> dict:
    """Pooled statistics of a list of pieces (see the module doc).

    Returns a dict: pitch_class_histogram (12,), note_length_histogram (17,) and
    interval_histogram (14,) numpy arrays summing to 1 (zeros when there is no note), in_key
    (share of notes, nan with no note), mean_polyphony, pieces, notes, steps.
    """
    arrays = _as_pieces(pieces, form)
    pitch_classes, lengths, intervals = [], [], []
    in_key = notes_total = steps = sounding = 0
    for grid, onsets in arrays:
        notes = grid_to_notes(grid, onsets)
        pitch_classes.append(notes[:, 2] % 12)
        lengths.append(np.minimum(notes[:, 1], NOTE_LENGTH_BINS) - 1)
        for v in range(NUM_VOICES):
            line = notes[notes[:, 3] == v, 2]  # notes are sorted by start
            intervals.append(np.minimum(np.abs(np.diff(line)), INTERVAL_BINS - 1))
        if len(notes):
            in_key += int(in_key_mask(notes[:, 2], *estimate_key(grid, onsets)).sum())
        notes_total += len(notes)
        steps += grid.shape[0]
        sounding += int((grid > 0).sum())
    return {
        "pitch_class_histogram": _histogram(np.concatenate(pitch_classes), 12),
        "note_length_histogram": _histogram(np.concatenate(lengths), NOTE_LENGTH_BINS),
        "interval_histogram": _histogram(np.concatenate(intervals), INTERVAL_BINS),
        "in_key": in_key / notes_total if notes_total else float("nan"),
        "mean_polyphony": sounding / steps if steps else float("nan"),
        "pieces": len(arrays),
        "notes": notes_total,
        "steps": steps,
    }


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence of two histograms in bits (0..1); each is normalised first."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same shape, got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def compare(samples, reference, form: str = "events") -> dict:
    """Statistics of `samples` against `reference` (both lists of pieces).

    Returns floats: pitch_class_js / _l1, note_length_js / _l1 and interval_js / _l1 (histogram
    distances), in_key and in_key_reference, mean_polyphony and mean_polyphony_reference, and
    in_key_gap / polyphony_gap (absolute differences). Lower distances and gaps are better.
    """
    a, b = music_statistics(samples, form), music_statistics(reference, form)
    result = {}
    for name in ("pitch_class", "note_length", "interval"):
        p, q = a[f"{name}_histogram"], b[f"{name}_histogram"]
        result[f"{name}_js"] = js_divergence(p, q)
        result[f"{name}_l1"] = float(np.abs(p - q).sum())
    result.update(in_key=a["in_key"], in_key_reference=b["in_key"], in_key_gap=abs(a["in_key"] - b["in_key"]),
                  mean_polyphony=a["mean_polyphony"], mean_polyphony_reference=b["mean_polyphony"],
                  polyphony_gap=abs(a["mean_polyphony"] - b["mean_polyphony"]))
    return result


# -- baselines -------------------------------------------------------------------------------
_VOICE_RANGES = ((60, 81), (53, 74), (48, 69), (36, 62))  # soprano .. bass, inclusive MIDI


def _voice_line(rng, steps: int, pitches, pitch_p, length_p) -> list[tuple[int, int, int]]:
    notes, t = [], 0
    while t < steps:
        duration = int(rng.choice(len(length_p), p=length_p)) + 1
        notes.append((t, min(duration, steps - t), int(rng.choice(pitches, p=pitch_p))))
        t += duration
    return notes


def _pieces_from_lines(rng, n, steps, sampler) -> list[tuple[np.ndarray, np.ndarray]]:
    pieces = []
    for _ in range(n):
        notes = [(a, d, p, v) for v in range(NUM_VOICES) for a, d, p in sampler(rng, v)]
        pieces.append(notes_to_grid(np.array(notes, np.int64), steps))
    return pieces


def random_pieces(n: int, steps: int = 256, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n pieces of `steps` 16ths: each voice plays uniform random pitches in its usual range
    (soprano 60-81, alto 53-74, tenor 48-69, bass 36-62) with uniform lengths of 1..8 steps."""
    rng = np.random.default_rng(seed)
    lengths = np.full(8, 1 / 8)

    def sampler(rng, v):
        low, high = _VOICE_RANGES[v]
        pitches = np.arange(low, high + 1)
        return _voice_line(rng, steps, pitches, np.full(len(pitches), 1 / len(pitches)), lengths)

    return _pieces_from_lines(rng, n, steps, sampler)


def unigram_pieces(reference, n: int, steps: int = 256, seed: int = 0,
                   form: str = "events") -> list[tuple[np.ndarray, np.ndarray]]:
    """n pieces whose notes are drawn independently from the reference's per-voice pitch
    frequencies and its note-length frequencies (no rests): right notes, no music."""
    notes = np.concatenate([grid_to_notes(g, o) for g, o in _as_pieces(reference, form)])
    if not len(notes):
        raise ValueError("reference has no notes")
    lengths = np.bincount(np.minimum(notes[:, 1], 64) - 1, minlength=64).astype(np.float64)
    lengths /= lengths.sum()
    per_voice = []
    for v in range(NUM_VOICES):
        pitches = notes[notes[:, 3] == v, 2]
        pitches = pitches if len(pitches) else notes[:, 2]
        values, counts = np.unique(pitches, return_counts=True)
        per_voice.append((values, counts / counts.sum()))
    rng = np.random.default_rng(seed)
    return _pieces_from_lines(rng, n, steps, lambda rng, v: _voice_line(rng, steps, *per_voice[v], lengths))


def unigram_token_nll(train_tokens, test_tokens, vocab_size: int) -> float:
    """Held-out NLL (nats per token) of a unigram model of the training tokens (add-one
    smoothing): the NLL baseline a sequence model should beat."""
    train = np.asarray(train_tokens.cpu() if isinstance(train_tokens, torch.Tensor) else train_tokens, np.int64)
    test = np.asarray(test_tokens.cpu() if isinstance(test_tokens, torch.Tensor) else test_tokens, np.int64)
    counts = np.bincount(train.reshape(-1), minlength=vocab_size)[:vocab_size] + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[test.reshape(-1)].mean())


__all__ = [
    "music_statistics", "compare", "js_divergence", "estimate_key", "key_name", "in_key_mask",
    "random_pieces", "unigram_pieces", "unigram_token_nll", "NOTE_LENGTH_BINS", "INTERVAL_BINS",
]

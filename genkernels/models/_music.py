"""Shared helpers for next-token models over music tokens (MusicLSTM, GPT's music mode).

A model over genkernels.data.music tokens gives two callables and gets the family outputs:

    evaluate_music(dataset, nll_fn, sample_fn, form=..., vocab_size=...)
        held-out NLL over the dataset's windows in nats and bits per token (a token is one event
        in form "events", one voice of one 16th step in form "grid"), beside a unigram and a
        bigram model of the training split's tokens on the same predicted tokens; then the musical
        statistics (genkernels.metrics.music.compare) of `num_samples` generated pieces against the
        held-out pieces, beside random pieces, unigram pieces and real training pieces (the floor)
        compared with the same reference.
    music_sample_files(samples, form) -> {"sample_00.mid": bytes, "sample_00.wav": bytes, ...}
    music_figures(samples, form) -> {"piano_roll": matplotlib Figure} (four voices coloured)

Sample rows (what `sample` returns) are int64 (n, L): BOS, the generated tokens up to and
including the stop token, then padding. Form "events": stop EOS, pad PAD (0). Form "grid"
has no EOS: a piece ends where the model starts the next one (GRID_BOS), and rows are padded
with GRID_BOS, which decoding drops. Float rows (the CLI passes samples as float) are accepted
when they hold whole numbers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

MUSIC_FORMS = ("events", "grid")
DEFAULT_MAX_EVENTS = 512  # default generated tokens per piece (a chorale is ~330 events)
BIGRAM_ALPHA = 5.0  # Dirichlet prior strength of the bigram baseline, toward the unigram
_VOICE_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue")


class MusicTokens(NamedTuple):
    vocab_size: int
    bos: int
    stop: int
    pad: int


def music_tokens(form: str) -> MusicTokens:
    """(vocab_size, bos, stop, pad) of a token form."""
    from genkernels.data import music

    if form == "events":
        return MusicTokens(music.EVENT_VOCAB_SIZE, music.BOS, music.EOS, music.PAD)
    if form == "grid":
        return MusicTokens(music.GRID_VOCAB_SIZE, music.GRID_BOS, music.GRID_BOS, music.GRID_BOS)
    raise ValueError(f"form must be one of {list(MUSIC_FORMS)}, got {form!r}")


def check_music_tokens(tokens, vocab_size: int, name: str = "tokens", extra_dims_ok: bool = False) -> torch.Tensor:
    """tokens (B, T) int64 in [0, vocab_size) (ValueError / TypeError naming `name` otherwise)."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be an int64 tensor (B, T), got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise ValueError(f"{name} must be an int64 tensor (B, T), got a {tokens.dtype} tensor of shape "
                         f"{tuple(tokens.shape)}")
    if tokens.numel() and not torch.compiler.is_compiling() and (
            int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} must lie in [0, vocab_size = {vocab_size}), got values from "
                         f"{int(tokens.min())} to {int(tokens.max())}")
    return tokens


def as_prompts(prompt_tokens, vocab_size: int, n: int | None = None) -> list[list[int]]:
    """A (B, T) integer tensor, a 1-D integer tensor / list (one prompt, repeated n times) or a
    list of B non-empty token lists -> B lists of ints in [0, vocab_size)."""
    if isinstance(prompt_tokens, torch.Tensor):
        if prompt_tokens.is_floating_point() or prompt_tokens.is_complex() or prompt_tokens.dtype == torch.bool \
                or prompt_tokens.dim() not in (1, 2):
            raise ValueError(f"prompt_tokens must be a 1-D or (B, T) integer tensor or a list of token lists, got a "
                             f"{prompt_tokens.dtype} tensor of shape {tuple(prompt_tokens.shape)}")
        prompt_tokens = prompt_tokens.tolist()
    if isinstance(prompt_tokens, np.ndarray):
        if not np.issubdtype(prompt_tokens.dtype, np.integer):
            raise ValueError(f"prompt_tokens must hold integers, got dtype {prompt_tokens.dtype}")
        prompt_tokens = prompt_tokens.tolist()
    if not isinstance(prompt_tokens, (list, tuple)) or not prompt_tokens:
        raise TypeError(f"prompt_tokens must be a non-empty list of token ids or of token lists, got "
                        f"{prompt_tokens!r:.80}")
    if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt_tokens):
        prompts = [list(map(int, prompt_tokens))] * (1 if n is None else n)
    else:
        prompts = []
        for i, p in enumerate(prompt_tokens):
            if isinstance(p, (torch.Tensor, np.ndarray)):
                p = p.tolist() if p.ndim == 1 and not (p.dtype.is_floating_point if isinstance(p, torch.Tensor)
                                                       else np.issubdtype(p.dtype, np.floating)) else None
            if not isinstance(p, (list, tuple)) or any(isinstance(t, bool) or not isinstance(t, (int, np.integer))
                                                       for t in p):
                raise TypeError(f"prompt_tokens[{i}] must be a list of int token ids, got {p!r:.80}")
            prompts.append([int(t) for t in p])
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt_tokens[{i}] is empty: every prompt needs at least one token (BOS)")
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt_tokens[{i}] has token {bad[0]} outside [0, vocab_size = {vocab_size})")
    return prompts


def pad_rows(rows: list[list[int]], pad: int) -> torch.Tensor:
    """Token lists -> int64 (n, longest) padded with `pad`."""
    longest = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), longest), pad, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def token_rows(samples, vocab_size: int, name: str = "samples") -> list[np.ndarray]:
    """Sample rows (n, L) (int, or float holding whole numbers) -> n int64 arrays."""
    if isinstance(samples, (list, tuple)):
        return [token_rows(torch.as_tensor(np.asarray(s))[None], vocab_size, name)[0] for s in samples]
    if not isinstance(samples, torch.Tensor):
        samples = torch.as_tensor(np.asarray(samples))
    if samples.dim() == 1:
        samples = samples[None]
    if samples.dim() != 2:
        raise ValueError(f"{name} must be token rows (n, L), got shape {tuple(samples.shape)}")
    if samples.is_floating_point():
        if not torch.equal(samples, samples.round()):
            raise ValueError(f"{name} must hold whole token ids, got fractional values")
    elif samples.dtype == torch.bool or samples.is_complex():
        raise TypeError(f"{name} must hold integer token ids, got {samples.dtype}")
    rows = samples.detach().cpu().double().numpy().astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= vocab_size):
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values from {rows.min()} to {rows.max()}")
    return list(rows)


def decode_piece(tokens, form: str) -> tuple[np.ndarray, np.ndarray]:
    """One sample row -> (grid (T, 4), onsets); decoding stops at the piece's end (EOS / next BOS)."""
    from genkernels.data.music import decode_events, decode_grid_tokens

    tokens = np.asarray(tokens, dtype=np.int64)
    if form == "events":
        return decode_events(tokens)
    bos = music_tokens("grid").bos
    starts = np.flatnonzero(tokens == bos)
    if len(starts) > 1:  # the row's own BOS, then the next piece's
        first = starts[0] if starts[0] == 0 else 0
        later = starts[starts > first]
        tokens = tokens[:later[0]] if len(later) else tokens
    return decode_grid_tokens(tokens)


# -- files and figures ------------------------------------------------------------------------
def music_sample_files(samples, form: str, *, sample_rate: int = 16000, bpm: float | None = None,
                       max_files: int | None = None, max_wav: int | None = 16) -> dict[str, bytes]:
    """{"sample_00.mid": MIDI bytes, "sample_00.wav": 16-bit WAV bytes, ...} for each sample row
    (at most max_files of them; WAV renderings for the first max_wav only, ~1 MB per chorale);
    an empty piece still gets (silent) files."""
    from genkernels.data.music import DEFAULT_BPM, events_to_midi, render_wav

    vocab = music_tokens(form).vocab_size
    rows = token_rows(samples, vocab)[:max_files]
    files = {}
    for i, row in enumerate(rows):
        grid, onsets = decode_piece(row, form)
        files[f"sample_{i:02d}.mid"] = events_to_midi(grid, onsets=onsets, bpm=bpm or DEFAULT_BPM)
        if max_wav is not None and i >= max_wav:
            continue
        files[f"sample_{i:02d}.wav"] = render_wav(grid, sample_rate, onsets=onsets, bpm=bpm or DEFAULT_BPM,
                                                  seed=i)[1]
    return files


def piano_roll_figure(pieces, form: str = "events", *, max_pieces: int = 4, max_steps: int | None = 256,
                      titles: list[str] | None = None):
    """A matplotlib Figure: one piano roll per piece (first max_pieces; first max_steps 16ths),
    notes as bars, soprano / alto / tenor / bass in red / orange / green / blue. Pieces are sample
    rows (tokens of `form`), (grid, onsets) pairs or Pieces."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from genkernels.data.music import VOICE_NAMES, Piece, _as_grid, grid_to_notes

    if isinstance(pieces, torch.Tensor) or (isinstance(pieces, np.ndarray) and pieces.ndim == 2):
        pieces = [decode_piece(r, form) for r in token_rows(pieces, music_tokens(form).vocab_size)]
    arrays = []
    for p in list(pieces)[:max_pieces]:
        if isinstance(p, Piece):
            arrays.append(_as_grid(p.grid, p.onsets))
        elif isinstance(p, tuple):
            arrays.append(_as_grid(*p))
        else:
            arrays.append(decode_piece(np.asarray(p), form))
    figure = Figure(figsize=(10, 2.4 * max(1, len(arrays))), layout="constrained")
    axes = figure.subplots(max(1, len(arrays)), 1, squeeze=False)[:, 0]
    for i, (axis, (grid, onsets)) in enumerate(zip(axes, arrays)):
        notes = grid_to_notes(grid, onsets)
        if max_steps is not None:
            notes = notes[notes[:, 0] < max_steps]
            notes[:, 1] = np.minimum(notes[:, 1], max_steps - notes[:, 0])
        for v in range(len(VOICE_NAMES)):
            mine = notes[notes[:, 3] == v]
            for start, duration, pitch, _ in mine:
                axis.broken_barh([(start, duration)], (pitch - 0.4, 0.8), facecolors=_VOICE_COLOURS[v],
                                 edgecolors="black", linewidth=0.3)
        steps = grid.shape[0] if max_steps is None else min(grid.shape[0], max_steps)
        axis.set_xlim(0, max(steps, 16))
        if len(notes):
            axis.set_ylim(notes[:, 2].min() - 2, notes[:, 2].max() + 2)
        for bar in range(0, max(steps, 16) + 1, 16):
            axis.axvline(bar, color="grey", linewidth=0.3, alpha=0.5)
        axis.set_ylabel("MIDI pitch")
        title = titles[i] if titles and i < len(titles) else f"sample {i}"
        axis.set_title(f"{title}: {grid.shape[0]} sixteenths, {len(grid_to_notes(grid, onsets))} notes")
    axes[-1].set_xlabel("16th-note step (grey lines: every 4 quarters)")
    axes[0].legend(handles=[Patch(color=c, label=n) for c, n in zip(_VOICE_COLOURS, VOICE_NAMES)],
                   loc="upper right", fontsize="small", ncols=4)
    return figure


def music_figures(samples, form: str) -> dict[str, Any]:
    """{"piano_roll": piano_roll_figure(first 4 samples)}; {} when there are no samples."""
    rows = token_rows(samples, music_tokens(form).vocab_size)
    if not rows:
        return {}
    return {"piano_roll": piano_roll_figure([decode_piece(r, form) for r in rows], form)}


# -- baselines --------------------------------------------------------------------------------
_TRAIN_CACHE: dict[tuple, Any] = {}


def training_split(dataset):
    """The training split that goes with a held-out music dataset, for the baselines: the dataset's
    `train_split` attribute when set (a script can pin it); the dataset itself for a train split;
    ChoralesDataset("train") (as many pieces as the dataset's split
    would suggest when it was cut with max_pieces); a MidiFolderDataset's train files. None when
    unknown. Cached per source and form."""
    from genkernels.data.music import ChoralesDataset, MidiFolderDataset, chorale_paths, split_pieces

    if getattr(dataset, "train_split", None) is not None:
        return dataset.train_split
    if getattr(dataset, "split", None) == "train":
        return dataset
    form, block = getattr(dataset, "form", "events"), getattr(dataset, "block_size", 256)
    try:
        if isinstance(dataset, ChoralesDataset):
            full = len(split_pieces(len(chorale_paths()), dataset.split)) - 1  # one score is not a chorale
            cut = None if len(dataset.pieces) >= full else 8 * len(dataset.pieces)
            key = ("chorales", form, cut)
            if key not in _TRAIN_CACHE:
                _TRAIN_CACHE[key] = ChoralesDataset("train", form=form, block_size=block, max_pieces=cut)
            return _TRAIN_CACHE[key]
        if isinstance(dataset, MidiFolderDataset):
            key = ("midi", str(dataset.source), form)
            if key not in _TRAIN_CACHE:
                _TRAIN_CACHE[key] = MidiFolderDataset(dataset.source, "train", form=form, block_size=1)
            return _TRAIN_CACHE[key]
    except (ValueError, ImportError, OSError):
        return None
    return None


def ngram_log_probs(train_tokens, vocab_size: int, alpha: float = BIGRAM_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(unigram log p (V,), bigram log p(b | a) (V, V)) of training tokens: add-one unigram (as
    genkernels.metrics.music.unigram_token_nll), bigram Dirichlet-smoothed toward it."""
    train = np.asarray(train_tokens, dtype=np.int64).reshape(-1)
    counts = np.bincount(train, minlength=vocab_size)[:vocab_size] + 1.0
    unigram = counts / counts.sum()
    pairs = np.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size * vocab_size)
    pairs = pairs[:vocab_size * vocab_size].reshape(vocab_size, vocab_size).astype(np.float64)
    bigram = (pairs + alpha * unigram[None]) / (pairs.sum(1, keepdims=True) + alpha)
    return np.log(unigram), np.log(bigram)


# -- evaluation -------------------------------------------------------------------------------
def evaluate_music(dataset, nll_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   sample_fn: Callable[[int, int], Any] | None, *, form: str, vocab_size: int,
                   max_items: int | None = None, batch_size: int = 32, num_samples: int = 16,
                   seed: int = 0, device=None, train=None) -> dict[str, float]:
    """Held-out NLL and musical statistics of a next-token model over music tokens.

    nll_fn(inputs (B, T), targets (B, T)) -> mean NLL in nats (a tensor); sample_fn(n, seed) ->
    sample rows (n, L); None (or num_samples 0) skips the statistics. train: the training dataset
    for the baselines (default: `training_split(dataset)`; no baselines when there is none).

    Keys: loss (= nll, nats/token), bits_per_token, tokens; unigram_nll / unigram_bits_per_token
    and bigram_nll / bigram_bits_per_token (same tokens); for each set S in samples, random,
    unigram, train: S_pitch_class_js, S_note_length_js, S_interval_js (bits, lower is closer to
    the held-out pieces), S_in_key, S_mean_polyphony; heldout_in_key, heldout_mean_polyphony;
    samples_steps (mean 16ths per generated piece) and samples_ended (share that reached the end
    token).
    """
    from genkernels.metrics.music import compare, random_pieces, unigram_pieces
    from genkernels.models._validate import evaluation_count

    count = evaluation_count(dataset, max_items, batch_size)
    if train is None:
        train = training_split(dataset)
    train_tokens = getattr(train, "tokens", None)
    log_uni = log_bi = None
    if train_tokens is not None:
        log_uni, log_bi = ngram_log_probs(train_tokens.numpy(), vocab_size)
    total = uni = bi = 0.0
    num = 0
    for begin in range(0, count, batch_size):
        batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))])
        check_music_tokens(batch, vocab_size, "dataset windows")
        inputs, targets = batch[:, :-1], batch[:, 1:]
        on_device = (inputs, targets) if device is None else (inputs.to(device), targets.to(device))
        with torch.no_grad():
            total += float(nll_fn(*on_device)) * targets.numel()
        num += targets.numel()
        if log_uni is not None:
            a, b = inputs.numpy().reshape(-1), targets.numpy().reshape(-1)
            uni -= float(log_uni[b].sum())
            bi -= float(log_bi[a, b].sum())
    ln2 = math.log(2)
    metrics = {"loss": total / num, "bits_per_token": total / num / ln2, "tokens": float(num)}
    if log_uni is not None:
        metrics.update(unigram_nll=uni / num, unigram_bits_per_token=uni / num / ln2,
                       bigram_nll=bi / num, bigram_bits_per_token=bi / num / ln2)
    reference = list(getattr(dataset, "pieces", []) or [])
    if sample_fn is None or num_samples <= 0 or not reference:
        return metrics
    tokens = music_tokens(form)
    rows = token_rows(sample_fn(num_samples, seed), vocab_size)
    generated = [decode_piece(r, form) for r in rows]
    steps = [g.shape[0] for g, _ in generated]
    metrics["samples_steps"] = float(np.mean(steps))
    ended = []
    for r in rows:
        after = r[1:] if len(r) and r[0] == tokens.bos else r
        ended.append(bool((after == tokens.stop).any()))
    metrics["samples_ended"] = float(np.mean(ended))
    ref_steps = int(round(np.mean([len(p) for p in reference])))
    train_pieces = list(getattr(train, "pieces", []) or [])
    sets = {"samples": [g for g in generated if g[0].shape[0] > 0],
            "random": random_pieces(num_samples, ref_steps, seed=seed),
            "unigram": unigram_pieces(train_pieces or reference, num_samples, ref_steps, seed=seed)}
    if train_pieces:
        pick = np.random.default_rng(seed).permutation(len(train_pieces))[:num_samples]
        sets["train"] = [train_pieces[i] for i in sorted(pick)]
    for name, pieces in sets.items():
        if not pieces:  # nothing generated that lasts a step
            for key in ("pitch_class_js", "note_length_js", "interval_js", "in_key", "mean_polyphony"):
                metrics[f"{name}_{key}"] = float("nan")
            continue
        result = compare(pieces, reference, form)
        for key in ("pitch_class_js", "note_length_js", "interval_js", "in_key", "mean_polyphony"):
            metrics[f"{name}_{key}"] = float(result[key])
        metrics["heldout_in_key"] = float(result["in_key_reference"])
        metrics["heldout_mean_polyphony"] = float(result["mean_polyphony_reference"])
    return metrics


STAT_KEYS = ("pitch_class_js", "note_length_js", "interval_js", "in_key", "mean_polyphony")


def format_music_table(metrics: dict[str, float], sets: tuple[str, ...] = ("samples", "train", "unigram", "random"),
                       labels: dict[str, str] | None = None) -> str:
    """The statistics of evaluate_music as a text table (rows: sets; columns: STAT_KEYS), with the
    held-out pieces' own in_key / polyphony as the last row."""
    labels = labels or {}
    head = f"{'':<18}" + "".join(f"{k:>16}" for k in STAT_KEYS)
    lines = [head]
    for s in sets:
        if f"{s}_pitch_class_js" in metrics:
            lines.append(f"{labels.get(s, s):<18}" + "".join(f"{metrics[f'{s}_{k}']:>16.4f}" for k in STAT_KEYS))
    if "heldout_in_key" in metrics:
        lines.append(f"{'held-out (ref)':<18}" + f"{'0':>16}" * 3 + f"{metrics['heldout_in_key']:>16.4f}"
                     + f"{metrics['heldout_mean_polyphony']:>16.4f}")
    return "\n".join(lines)


__all__ = ["MUSIC_FORMS", "DEFAULT_MAX_EVENTS", "MusicTokens", "music_tokens", "check_music_tokens", "as_prompts",
           "pad_rows", "token_rows", "decode_piece", "music_sample_files", "piano_roll_figure", "music_figures",
           "training_split", "ngram_log_probs", "evaluate_music", "format_music_table", "STAT_KEYS"]

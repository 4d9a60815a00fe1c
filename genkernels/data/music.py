"""Four-voice music: J. S. Bach's chorales from the music21 wheel, or a folder of MIDI files.

Needs the optional extra: `pip install genkernels[music]` (music21 for the chorales, mido for MIDI
files); both are imported only when used. Nothing is downloaded: music21's wheel ships the
chorale scores in its `corpus/bach` folder.

Forms
-----
grid     (T, 4) int64 MIDI pitches of soprano, alto, tenor and bass on a 16th-note grid, 0 = rest,
         with `onsets` (T, 4) bool marking where a note starts (so two repeated quarter notes
         differ from one half note). Without onsets, a note starts wherever the pitch changes.
events   a 1-D token sequence (vocabulary EVENT_VOCAB_SIZE = 535, see `encode_events`):
           0 PAD, 1 BOS, 2 EOS,
           3..18   TIME_SHIFT(k): advance k = 1..16 sixteenth steps,
           19 + 129 * v + p   NOTE(v, p): voice v (0..3) starts MIDI pitch p (0..127),
           19 + 129 * v + 128 REST(v): voice v falls silent.
         At each step where something changes, the NOTE / REST tokens come in voice order, then
         TIME_SHIFTs up to the next change; a piece is BOS, events, EOS.
grid tokens (form="grid" of ChoralesDataset) the grid read row by row, 4 tokens per step
         (vocabulary GRID_VOCAB_SIZE = 130): 0 rest, p = 1..127 a note of pitch p starts,
         128 HOLD (the voice's note goes on), 129 BOS (start of a piece).

Chorales
--------
Every score in music21's corpus/bach (.mxl, .xml, .krn; the roman-numeral analyses are skipped)
is parsed once, when a split first needs it; a score is kept when it has four parts named
soprano / alto / tenor / bass (or exactly four parts): 412 of 413. Ties are merged, grace notes
dropped, chords inside a part keep their top note, and times are rounded to the nearest 16th.
The arrays are cached as .npz under $GENKERNELS_CACHE (else $XDG_CACHE_HOME/genkernels, else
~/.cache/genkernels), keyed by the music21 version. Score files (sorted by name) go to train /
val / test by a permutation with a fixed seed, 80 / 10 / 10: 330 / 40 / 42 pieces (107,638 /
13,562 / 12,639 event tokens). Several chorale melodies appear in more than one cantata,
harmonised differently; those copies are not merged, so a melody can sit in train and in test.

MIDI folders
------------
Each .mid / .midi file (sorted by path) is one piece. Every (track, channel) that has notes is a
voice; the four with the most notes are kept (others dropped), ordered from the highest mean
pitch to the lowest; inside a voice the highest sounding note wins. A file written by
`events_to_midi` reads back exactly. Files go to splits by position (every 20th to val and to
test, as for other user data).
"""
from __future__ import annotations

import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels._cache import cache_dir
from genkernels.data._splits import FILE_SPLITS, check_split, split_indices

MUSIC_EXTENSIONS = (".mid", ".midi")
NUM_VOICES = 4
VOICE_NAMES = ("soprano", "alto", "tenor", "bass")
STEPS_PER_QUARTER = 4  # 16th-note grid

# events vocabulary
PAD, BOS, EOS = 0, 1, 2
MAX_SHIFT = 16
SHIFT_BASE = 3                                   # TIME_SHIFT(k) = SHIFT_BASE + k - 1
VOICE_BASE = SHIFT_BASE + MAX_SHIFT              # 19
VOICE_TOKENS = 129                               # 128 pitches + REST per voice
EVENT_VOCAB_SIZE = VOICE_BASE + NUM_VOICES * VOICE_TOKENS  # 535

# grid-token vocabulary
GRID_REST, GRID_HOLD, GRID_BOS = 0, 128, 129
GRID_VOCAB_SIZE = 130

_CACHE_FORMAT = 1
_SPLIT_SEED = 1234
_SPLIT_FRACTIONS = (0.8, 0.1)  # train, val; test takes the rest
DEFAULT_BLOCK_SIZE = 256
DEFAULT_BPM = 80
_INSTALL_HINT = "pip install genkernels[music]"


def _import_music21():
    try:
        import music21
    except ImportError as error:
        raise ImportError(f"the chorales need music21: {_INSTALL_HINT} ({error})") from None
    return music21


def _import_mido():
    try:
        import mido
    except ImportError as error:
        raise ImportError(f"MIDI files need mido: {_INSTALL_HINT} ({error})") from None
    return mido


# -- pieces ----------------------------------------------------------------------------------
@dataclass
class Piece:
    """One four-voice piece: grid (T, 4) int64 MIDI pitches (0 rest), onsets (T, 4) bool.

    key_sharps: the written key signature (sharps > 0, flats < 0; 0 when unknown), key_mode
    "major" / "minor" / "" as written, time_signature (numerator, denominator), (0, 0) unknown.
    """

    name: str
    grid: np.ndarray
    onsets: np.ndarray
    key_sharps: int = 0
    key_mode: str = ""
    time_signature: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return self.grid.shape[0]

    def events(self) -> np.ndarray:
        return encode_events(self.grid, self.onsets)


def _as_grid(grid, onsets=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a grid (T, 4) of MIDI pitches (0 rest) and its onsets (inferred when None)."""
    if isinstance(grid, torch.Tensor):
        grid = grid.detach().cpu().numpy()
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.shape[1] != NUM_VOICES:
        raise ValueError(f"grid must have shape (steps, {NUM_VOICES}), got {grid.shape}")
    if grid.size and not np.issubdtype(grid.dtype, np.integer):
        raise TypeError(f"grid must hold integer MIDI pitches, got dtype {grid.dtype}")
    grid = grid.astype(np.int64)
    if grid.size and (grid.min() < 0 or grid.max() > 127):
        raise ValueError(f"grid pitches must be in 0..127 (0 = rest), got {grid.min()}..{grid.max()}")
    if onsets is None:
        previous = np.vstack([np.zeros((1, NUM_VOICES), np.int64), grid[:-1]])
        onsets = (grid != previous) & (grid > 0)
    else:
        if isinstance(onsets, torch.Tensor):
            onsets = onsets.detach().cpu().numpy()
        onsets = np.asarray(onsets, dtype=bool)
        if onsets.shape != grid.shape:
            raise ValueError(f"onsets must have the grid's shape {grid.shape}, got {onsets.shape}")
        # A note starts where asked, and wherever the pitch changes or follows a rest.
        previous = np.vstack([np.zeros((1, NUM_VOICES), np.int64), grid[:-1]])
        onsets = (onsets | (grid != previous)) & (grid > 0)
    return grid, onsets


def grid_to_notes(grid, onsets=None) -> np.ndarray:
    """Notes of a grid as int64 (N, 4) rows (start_step, duration_steps, pitch, voice), sorted by
    start then voice."""
    grid, onsets = _as_grid(grid, onsets)
    notes = []
    for voice in range(NUM_VOICES):
        starts = np.flatnonzero(onsets[:, voice])
        for i, start in enumerate(starts):
            stop = start + 1
            limit = starts[i + 1] if i + 1 < len(starts) else grid.shape[0]
            while stop < limit and grid[stop, voice] == grid[start, voice]:
                stop += 1
            notes.append((start, stop - start, grid[start, voice], voice))
    notes = np.array(sorted(notes, key=lambda n: (n[0], n[3])), dtype=np.int64).reshape(-1, 4)
    return notes


def notes_to_grid(notes, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `grid_to_notes`: (grid (T, 4), onsets (T, 4)); T defaults to the last note's end."""
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
    end = int((notes[:, 0] + notes[:, 1]).max()) if len(notes) else 0
    steps = end if steps is None else max(steps, 0)
    grid = np.zeros((steps, NUM_VOICES), np.int64)
    onsets = np.zeros((steps, NUM_VOICES), bool)
    for start, duration, pitch, voice in notes:
        if start >= steps or duration <= 0:
            continue
        grid[start:start + duration, voice] = pitch
        onsets[start, voice] = True
    return grid, onsets & (grid > 0)


# -- event tokens ----------------------------------------------------------------------------
def note_token(voice: int, pitch: int) -> int:
    return VOICE_BASE + VOICE_TOKENS * voice + pitch


def rest_token(voice: int) -> int:
    return VOICE_BASE + VOICE_TOKENS * voice + 128


def shift_token(steps: int) -> int:
    return SHIFT_BASE + steps - 1


def encode_events(grid, onsets=None, *, bos: bool = True, eos: bool = True) -> np.ndarray:
    """A grid (T, 4) (+ onsets) as event tokens (int64, 1-D), BOS ... EOS; see the module doc."""
    grid, onsets = _as_grid(grid, onsets)
    tokens = [BOS] if bos else []
    state = np.zeros(NUM_VOICES, np.int64)
    pending = 0  # steps not yet emitted as TIME_SHIFTs
    for t in range(grid.shape[0]):
        row = []
        for v in range(NUM_VOICES):
            if onsets[t, v]:
                row.append(note_token(v, int(grid[t, v])))
            elif grid[t, v] == 0 and state[v] != 0:
                row.append(rest_token(v))
        if row:
            while pending > 0:
                tokens.append(shift_token(min(pending, MAX_SHIFT)))
                pending -= min(pending, MAX_SHIFT)
            tokens += row
        state = grid[t]
        pending += 1
    while pending > 0:
        tokens.append(shift_token(min(pending, MAX_SHIFT)))
        pending -= min(pending, MAX_SHIFT)
    if eos:
        tokens.append(EOS)
    return np.array(tokens, dtype=np.int64)


def decode_events(tokens) -> tuple[np.ndarray, np.ndarray]:
    """Event tokens -> (grid (T, 4) int64, onsets (T, 4) bool). PAD and BOS are skipped and
    decoding stops at the first EOS, so a model's raw sample decodes; events after the last
    TIME_SHIFT (no duration) are dropped. Raises ValueError for a token outside the vocabulary."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got dtype {tokens.dtype}")
    bad = np.flatnonzero((tokens < 0) | (tokens >= EVENT_VOCAB_SIZE))
    if bad.size:
        raise ValueError(f"event tokens must be in 0..{EVENT_VOCAB_SIZE - 1}, got {tokens[bad[0]]} at "
                         f"position {bad[0]}")
    rows, onset_rows = [], []
    state = np.zeros(NUM_VOICES, np.int64)
    started = np.zeros(NUM_VOICES, bool)
    for token in tokens.tolist():
        if token == EOS:
            break
        if token in (PAD, BOS):
            continue
        if token < VOICE_BASE:
            steps = token - SHIFT_BASE + 1
            rows.append(np.repeat(state[None], steps, axis=0))
            first = np.zeros((steps, NUM_VOICES), bool)
            first[0] = started & (state > 0)
            onset_rows.append(first)
            started[:] = False
            continue
        voice, pitch = divmod(token - VOICE_BASE, VOICE_TOKENS)
        state[voice] = 0 if pitch == 128 else pitch
        started[voice] = pitch != 128 and pitch > 0
    if not rows:
        return np.zeros((0, NUM_VOICES), np.int64), np.zeros((0, NUM_VOICES), bool)
    return np.concatenate(rows), np.concatenate(onset_rows)


def encode_grid_tokens(grid, onsets=None, *, bos: bool = True) -> np.ndarray:
    """A grid as row-major grid tokens (int64, 1-D, 4 per step): pitch at an onset, HOLD (128)
    while a note goes on, 0 for rest; BOS (129) first."""
    grid, onsets = _as_grid(grid, onsets)
    tokens = np.where(onsets, grid, np.where(grid > 0, GRID_HOLD, GRID_REST)).reshape(-1)
    return np.concatenate([[GRID_BOS], tokens]).astype(np.int64) if bos else tokens.astype(np.int64)


def decode_grid_tokens(tokens) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_grid_tokens`: BOS tokens are dropped, a trailing partial row too; a HOLD
    after a rest is read as a rest."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= GRID_VOCAB_SIZE):
        raise ValueError(f"grid tokens must be in 0..{GRID_VOCAB_SIZE - 1}, got {tokens.min()}..{tokens.max()}")
    tokens = tokens[tokens != GRID_BOS]
    tokens = tokens[:len(tokens) // NUM_VOICES * NUM_VOICES].reshape(-1, NUM_VOICES)
    grid = np.zeros(tokens.shape, np.int64)
    onsets = (tokens > 0) & (tokens < GRID_HOLD)
    state = np.zeros(NUM_VOICES, np.int64)
    for t, row in enumerate(tokens):
        state = np.where(onsets[t], row, np.where(row == GRID_HOLD, state, 0))
        grid[t] = state
    return grid, onsets


# -- parsing the chorales --------------------------------------------------------------------
def _music21_folder_and_version() -> tuple[Path, str]:
    """Where music21 is installed and its version, without importing it (that takes a second)."""
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("music21")
        version = importlib.metadata.version("music21")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        music21 = _import_music21()  # raises the ImportError with the install hint when missing
        return Path(music21.__file__).parent, music21.__version__
    return Path(list(spec.submodule_search_locations)[0]), version


def chorale_paths() -> list[Path]:
    """The score files of music21's corpus/bach folder (sorted by name)."""
    folder = _music21_folder_and_version()[0] / "corpus" / "bach"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mxl", ".xml", ".krn", ".musicxml"))


def _pick_parts(parts) -> list | None:
    named = {}
    for part in parts:
        name = (part.partName or part.id or "").strip().lower()
        for voice in VOICE_NAMES:
            if name.startswith(voice) or name == voice[0]:
                named.setdefault(voice, part)
    if len(named) == NUM_VOICES:
        return [named[v] for v in VOICE_NAMES]
    return list(parts) if len(parts) == NUM_VOICES else None


def parse_score(path: str | os.PathLike) -> Piece | None:
    """Parse one score file with music21 into a Piece; None when it is not a four-part score."""
    music21 = _import_music21()
    score = music21.converter.parse(str(path))
    parts = _pick_parts(list(score.parts))
    if parts is None:
        return None
    steps = int(round(float(score.highestTime) * STEPS_PER_QUARTER))
    grid = np.zeros((steps, NUM_VOICES), np.int64)
    onsets = np.zeros((steps, NUM_VOICES), bool)
    for v, part in enumerate(parts):
        for element in part.flatten().notes:
            if element.duration.isGrace or float(element.quarterLength) <= 0:
                continue
            start = int(round(float(element.offset) * STEPS_PER_QUARTER))
            stop = int(round(float(element.offset + element.quarterLength) * STEPS_PER_QUARTER))
            stop = min(stop, steps)
            if stop <= start:
                continue
            pitch = max(p.midi for p in element.pitches) if element.isChord else element.pitch.midi
            grid[start:stop, v] = pitch
            tie = element.tie
            onsets[start, v] = not (tie is not None and tie.type in ("stop", "continue"))
    grid, onsets = _as_grid(grid, onsets)
    key_sharps, key_mode, time_signature = 0, "", (0, 0)
    keys = list(score.recurse().getElementsByClass("KeySignature"))
    if keys:
        key_sharps = int(keys[0].sharps)
        key_mode = str(getattr(keys[0], "mode", "") or "")
    meters = list(score.recurse().getElementsByClass("TimeSignature"))
    if meters:
        time_signature = (int(meters[0].numerator), int(meters[0].denominator))
    return Piece(_piece_name(Path(path)), grid, onsets, key_sharps, key_mode, time_signature)


def _parse_many(paths: list[Path], workers: int) -> list[Piece | None]:
    if workers <= 1 or len(paths) < 8:
        return [parse_score(p) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(parse_score, paths, chunksize=4))


def _cache_path() -> Path:
    return cache_dir() / f"chorales-music21-{_music21_folder_and_version()[1]}-v{_CACHE_FORMAT}.npz"


def _save_cache(path: Path, parsed: dict[str, Piece | None]) -> None:
    """Cache parsed scores: name -> Piece, or None for a score that is not a four-part chorale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(parsed)
    pieces = [parsed[n] for n in names]
    empty = Piece("", np.zeros((0, NUM_VOICES), np.int64), np.zeros((0, NUM_VOICES), bool))
    filled = [p if p is not None else empty for p in pieces]
    arrays = dict(
        names=np.array(names, dtype=str),
        kept=np.array([p is not None for p in pieces], bool),
        lengths=np.array([len(p) for p in filled], np.int64),
        grid=np.concatenate([p.grid for p in filled]).astype(np.int8),
        onsets=np.concatenate([p.onsets for p in filled]),
        key_sharps=np.array([p.key_sharps for p in filled], np.int64),
        key_mode=np.array([p.key_mode for p in filled], dtype=str),
        time_signature=np.array([p.time_signature for p in filled], np.int64).reshape(-1, 2),
    )
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)


def _load_cache(path: Path) -> dict[str, Piece | None]:
    with np.load(path) as npz:
        data = {key: npz[key] for key in npz.files}  # each npz[key] reads (and inflates) again
    bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
    grid, onsets = data["grid"].astype(np.int64), data["onsets"]
    parsed = {}
    for i, name in enumerate(data["names"].tolist()):
        a, b = bounds[i], bounds[i + 1]
        ts = data["time_signature"][i].tolist()
        parsed[name] = (Piece(name, grid[a:b], onsets[a:b], int(data["key_sharps"][i]), str(data["key_mode"][i]),
                              (ts[0], ts[1])) if data["kept"][i] else None)
    return parsed


def load_chorales(split: str = "all", *, max_pieces: int | None = None, workers: int | None = None,
                  refresh: bool = False, verbose: bool = False) -> list[Piece]:
    """The four-part Bach chorales of the music21 corpus in `split`, as Pieces sorted by name.

    Score files (sorted by name) are split by `split_pieces`; the split's files are parsed (with
    `workers` processes, default up to 4; about 0.25 s of CPU a score, 100 s for all 413) and
    kept when they are four-part chorales, stopping once `max_pieces` pieces are found. Parsed
    scores are cached (see the module doc), so later calls only read the arrays (a fraction of a
    second, without importing music21). refresh=True parses again. 412 of the 413 scores are
    kept (bwv846, a keyboard prelude, is not a chorale).
    """
    check_split(split, FILE_SPLITS)
    if max_pieces is not None and (isinstance(max_pieces, bool) or not isinstance(max_pieces, int) or max_pieces <= 0):
        raise ValueError(f"max_pieces must be a positive int or None, got {max_pieces!r}")
    paths = chorale_paths()
    paths = [paths[i] for i in split_pieces(len(paths), split)]
    cache = _cache_path()
    parsed: dict[str, Piece | None] = {}
    if cache.exists() and not refresh:
        try:
            parsed = _load_cache(cache)
        except (OSError, ValueError, KeyError):
            parsed = {}  # a damaged cache is rebuilt
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    pieces: list[Piece] = []
    changed = False
    begin = time.perf_counter()
    position = 0
    while position < len(paths) and (max_pieces is None or len(pieces) < max_pieces):
        # Parse in batches just large enough for what is still needed.
        need = len(paths) if max_pieces is None else max(max_pieces - len(pieces), workers)
        batch = paths[position:position + need]
        position += len(batch)
        missing = [p for p in batch if _piece_name(p) not in parsed]
        if missing:
            parsed.update(zip(map(_piece_name, missing), _parse_many(missing, workers)))
            changed = True
        pieces += [parsed[_piece_name(p)] for p in batch if parsed[_piece_name(p)] is not None]
    if changed:
        if verbose:
            print(f"parsed scores in {time.perf_counter() - begin:.1f} s with {workers} workers")
        _save_cache(cache, parsed)
    return pieces[:max_pieces]


def _piece_name(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


def split_pieces(count: int, split: str, seed: int = _SPLIT_SEED) -> list[int]:
    """Indices (sorted) of `count` items in `split`: a seeded permutation cut 80 / 10 / 10."""
    check_split(split, FILE_SPLITS)
    if split == "all":
        return list(range(count))
    order = np.random.default_rng(seed).permutation(count)
    n_train = int(round(_SPLIT_FRACTIONS[0] * count))
    n_val = int(round(_SPLIT_FRACTIONS[1] * count))
    chosen = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}[split]
    return sorted(int(i) for i in chosen)


# -- MIDI ------------------------------------------------------------------------------------
def _grid_input(music, onsets=None) -> tuple[np.ndarray, np.ndarray]:
    """A Piece, event tokens (1-D) or a grid (T, 4) -> (grid, onsets)."""
    if isinstance(music, Piece):
        return _as_grid(music.grid, music.onsets)
    array = music.detach().cpu().numpy() if isinstance(music, torch.Tensor) else np.asarray(music)
    if array.ndim == 1:
        return decode_events(array)
    return _as_grid(array, onsets)


def events_to_midi(music, path: str | os.PathLike | None = None, *, onsets=None, bpm: float = DEFAULT_BPM,
                   program: int = 0, velocity: int = 80) -> bytes:
    """Write music (event tokens, a grid (T, 4) with optional onsets, or a Piece) as a type-1
    MIDI file: a tempo track, then one track per voice on channels 0..3. Returns the file's
    bytes (also written to `path` when given). A 16th step is 120 ticks (480 per quarter)."""
    mido = _import_mido()
    grid, onsets = _grid_input(music, onsets)
    ticks_per_step = 480 // STEPS_PER_QUARTER
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    midi.tracks.append(conductor)
    notes = grid_to_notes(grid, onsets)
    for voice in range(NUM_VOICES):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=VOICE_NAMES[voice], time=0))
        track.append(mido.Message("program_change", channel=voice, program=program, time=0))
        messages = []
        for start, duration, pitch, v in notes[notes[:, 3] == voice]:
            messages.append(((start + duration) * ticks_per_step, 0, int(pitch)))  # offs before ons
            messages.append((start * ticks_per_step, 1, int(pitch)))
        now = 0
        for tick, on, pitch in sorted(messages):
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, channel=voice, note=pitch, velocity=velocity if on else 0,
                                      time=int(tick - now)))
            now = tick
        midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _read_midi(source):
    mido = _import_mido()
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            return mido.MidiFile(file=io.BytesIO(bytes(source))), name
        return mido.MidiFile(str(source)), name
    except Exception as error:  # mido raises OSError, ValueError, EOFError, KeyError, IndexError...
        raise ValueError(f"cannot read MIDI file {name!r}: {type(error).__name__}: {error}") from None


def midi_to_grid(source) -> tuple[np.ndarray, np.ndarray]:
    """Read a MIDI file (path or bytes) into (grid (T, 4), onsets (T, 4)) on a 16th grid; see the
    module doc for how tracks become voices. Raises ValueError naming the file if it cannot be read."""
    midi, name = _read_midi(source)
    step_ticks = midi.ticks_per_beat / STEPS_PER_QUARTER
    streams: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for track_index, track in enumerate(midi.tracks):
        now, sounding = 0, {}
        for message in track:
            now += message.time
            if message.type not in ("note_on", "note_off"):
                continue
            key = (track_index, message.channel)
            if message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((key, message.note), []).append(now)
            elif sounding.get((key, message.note)):
                start = sounding[(key, message.note)].pop(0)
                a, b = int(round(start / step_ticks)), int(round(now / step_ticks))
                if b > a:
                    streams.setdefault(key, []).append((a, b, message.note))
    kept = sorted(streams.values(), key=len, reverse=True)[:NUM_VOICES]
    kept.sort(key=lambda notes: -np.mean([n[2] for n in notes]))
    steps = max((n[1] for notes in kept for n in notes), default=0)
    grid = np.zeros((steps, NUM_VOICES), np.int64)
    onsets = np.zeros((steps, NUM_VOICES), bool)
    for voice, notes in enumerate(kept):
        for a, b, pitch in notes:
            higher = grid[a:b, voice] > pitch
            grid[a:b, voice] = np.where(higher, grid[a:b, voice], pitch)
            if not higher[0]:
                onsets[a, voice] = True
    return _as_grid(grid, onsets)


def midi_to_events(source) -> np.ndarray:
    """Read a MIDI file (path or bytes) as event tokens (BOS ... EOS)."""
    return encode_events(*midi_to_grid(source))


def midi_files(path: str | os.PathLike) -> list[Path]:
    """The MIDI files a user path names: the file itself, or *.mid / *.midi under a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"music source {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MUSIC_EXTENSIONS)
    if not files:
        raise ValueError(f"music folder {str(path)!r} has no MIDI files (looked for {', '.join(MUSIC_EXTENSIONS)})")
    return files


# -- audio -----------------------------------------------------------------------------------
def render_wav(music, sample_rate: int = 16000, *, onsets=None, bpm: float = DEFAULT_BPM,
               seed: int = 0) -> tuple[np.ndarray, bytes]:
    """Render music (event tokens, a grid (T, 4) or a Piece) with the audio data's additive
    synthesiser (a few harmonics under an ADSR envelope, genkernels.data.audio). Returns
    (waveform float32 (samples,) in [-1, 1], 16-bit mono WAV bytes)."""
    from genkernels.data.audio import _adsr, write_wav

    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    grid, onsets = _grid_input(music, onsets)
    step_seconds = 60.0 / bpm / STEPS_PER_QUARTER
    tail = 0.1
    total = int(round((grid.shape[0] * step_seconds + tail) * sample_rate))
    audio = np.zeros(max(total, 1))
    rng = np.random.default_rng(seed)
    harmonics = (1.0, 0.4, 0.2, 0.1)
    for start, duration, pitch, voice in grid_to_notes(grid, onsets):
        begin = int(round(start * step_seconds * sample_rate))
        length = int(round(duration * step_seconds * sample_rate))
        if length <= 0:
            continue
        t = np.arange(length) / sample_rate
        frequency = 440.0 * 2.0 ** ((pitch - 69) / 12)
        note = sum(a * np.sin(2 * np.pi * h * frequency * t) for h, a in enumerate(harmonics, start=1)
                   if h * frequency < sample_rate / 2)
        audio[begin:begin + length] += (note * _adsr(length, sample_rate, rng))[:len(audio) - begin]
    peak = np.abs(audio).max()
    audio = (audio * (0.8 / peak) if peak > 0 else audio).astype(np.float32)
    buffer = io.BytesIO()
    write_wav(buffer, audio, sample_rate)
    return audio, buffer.getvalue()


# -- datasets --------------------------------------------------------------------------------
class _MusicDataset(Dataset):
    """Windows of block_size + 1 tokens (int64) over the split's pieces, concatenated (each piece
    BOS ... EOS in events form, BOS then 4 tokens per step in grid form). Item i starts at token
    i * stride (stride defaults to block_size). `pieces` keeps the whole pieces for evaluation,
    `piece_tokens(i)` gives one piece's tokens."""

    kind = "music"

    def _setup(self, pieces: list[Piece], form: str, block_size: int, stride: int | None, source: str,
               split: str) -> None:
        if form not in ("events", "grid"):
            raise ValueError(f"form must be 'events' or 'grid', got {form!r}")
        for name, value in (("block_size", block_size), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.source, self.split, self.form = source, split, form
        self.block_size = block_size
        self.stride = block_size if stride is None else stride
        self.pieces = pieces
        self.vocab_size = EVENT_VOCAB_SIZE if form == "events" else GRID_VOCAB_SIZE
        self.bos = BOS if form == "events" else GRID_BOS
        pieces_tokens = [self.piece_tokens(i) for i in range(len(pieces))]
        self.tokens = torch.from_numpy(np.concatenate(pieces_tokens) if pieces_tokens else np.zeros(0, np.int64))
        if self.tokens.numel() < block_size + 1:
            raise ValueError(f"split {split!r} of music source {source!r} has {self.tokens.numel()} tokens, "
                             f"fewer than block_size + 1 = {block_size + 1}")

    def piece_tokens(self, index: int) -> np.ndarray:
        piece = self.pieces[index]
        if self.form == "events":
            return encode_events(piece.grid, piece.onsets)
        return encode_grid_tokens(piece.grid, piece.onsets)

    def decode(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of this dataset's form -> (grid, onsets)."""
        return decode_events(tokens) if self.form == "events" else decode_grid_tokens(tokens)

    def __len__(self) -> int:
        return (self.tokens.numel() - self.block_size - 1) // self.stride + 1

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        return self.tokens[start:start + self.block_size + 1]  # (block_size + 1,) int64

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, split={self.split!r}, form={self.form!r}, "
                f"pieces={len(self.pieces)}, tokens={self.tokens.numel()}, block_size={self.block_size}, "
                f"windows={len(self)})")


class ChoralesDataset(_MusicDataset):
    """Bach chorales (music21 corpus) as token windows; see the module doc for forms and splits.

    max_pieces keeps the first pieces of the split and parses no more scores than that needs
    (handy for quick tests). pieces may also be given directly (a list of Piece, e.g. from
    `parse_score`); they are then split among themselves by the same seeded 80 / 10 / 10 rule.
    """

    def __init__(self, split: str = "train", form: str = "events", block_size: int = DEFAULT_BLOCK_SIZE,
                 stride: int | None = None, max_pieces: int | None = None, pieces: list[Piece] | None = None):
        check_split(split, FILE_SPLITS)
        if pieces is None:
            chosen = load_chorales(split, max_pieces=max_pieces)
        else:
            everything = sorted(pieces, key=lambda p: p.name)
            chosen = [everything[i] for i in split_pieces(len(everything), split)][:max_pieces]
        self._setup(chosen, form, block_size, stride, "chorales", split)


class MidiFolderDataset(_MusicDataset):
    """The MIDI files under a folder (or one file) as token windows; see the module doc."""

    def __init__(self, path: str | os.PathLike, split: str = "train", form: str = "events",
                 block_size: int = DEFAULT_BLOCK_SIZE, stride: int | None = None):
        check_split(split, FILE_SPLITS)
        files = midi_files(path)
        chosen = split_indices(len(files), split)
        if not chosen:
            raise ValueError(f"split {split!r} of music source {str(path)!r} is empty: {len(files)} MIDI files "
                             f"in all (every 20th goes to val and to test; use split='all')")
        pieces = [Piece(files[i].stem, *midi_to_grid(files[i])) for i in chosen]
        self._setup(pieces, form, block_size, stride, str(path), split)


__all__ = [
    "ChoralesDataset", "MidiFolderDataset", "Piece", "load_chorales", "parse_score", "chorale_paths",
    "split_pieces", "encode_events", "decode_events", "encode_grid_tokens", "decode_grid_tokens",
    "grid_to_notes", "notes_to_grid", "events_to_midi", "midi_to_events", "midi_to_grid", "render_wav",
    "midi_files", "MUSIC_EXTENSIONS", "EVENT_VOCAB_SIZE", "GRID_VOCAB_SIZE", "NUM_VOICES",
]

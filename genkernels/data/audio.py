"""Short audio clips: seeded synthetic musical phrases, or WAV files a user names.

The synthesiser plays a few notes (sometimes three-note chords) from a random pentatonic scale,
each with a few harmonics under an ADSR (attack, decay, sustain, release) envelope — structure a
WaveNet can learn in minutes on a CPU. WAV files are read with the standard library's `wave`
module: 8-bit (unsigned), 16-, 24- and 32-bit (signed) integer PCM, mono or stereo (averaged to
mono); a file at another sample rate is resampled linearly to the requested rate. Clips are cut
back to back from each file in sorted order, and every 20th clip goes to val and to test.

mu-law companding (ITU-T G.711, mu = 255) maps [-1, 1] to 256 levels for WaveNet's softmax.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels.data._splits import SPLITS, FILE_SPLITS, check_split, split_indices, split_seed

DEFAULT_SAMPLE_RATE = 8000
DEFAULT_SECONDS = 1.0
DEFAULT_SIZES = {"train": 256, "val": 32, "test": 32}
MU_LAW_LEVELS = 256
AUDIO_EXTENSIONS = (".wav",)
# Semitone offsets of the major and minor pentatonic scales.
_SCALES = ((0, 2, 4, 7, 9), (0, 3, 5, 7, 10))


# -- mu-law ----------------------------------------------------------------------------------
def mu_law_encode(audio: torch.Tensor, levels: int = MU_LAW_LEVELS) -> torch.Tensor:
    """Quantise audio in [-1, 1] to int64 codes 0..levels-1 by mu-law companding (mu = levels-1).

    f(x) = sign(x) * log(1 + mu |x|) / log(1 + mu), then f is mapped linearly from [-1, 1] to
    [0, mu] and rounded. Values outside [-1, 1] are clipped. Any shape; returns the same shape.
    """
    mu = levels - 1
    audio = audio.to(torch.float64).clamp(-1.0, 1.0)
    companded = torch.sign(audio) * torch.log1p(mu * audio.abs()) / np.log1p(mu)
    return torch.round((companded + 1.0) / 2.0 * mu).to(torch.int64)


def mu_law_decode(codes: torch.Tensor, levels: int = MU_LAW_LEVELS) -> torch.Tensor:
    """Inverse of `mu_law_encode`: int codes 0..levels-1 to float32 audio in [-1, 1]."""
    mu = levels - 1
    companded = codes.to(torch.float64) / mu * 2.0 - 1.0
    audio = torch.sign(companded) * torch.expm1(companded.abs() * np.log1p(mu)) / mu
    return audio.to(torch.float32)


# -- synthesis -------------------------------------------------------------------------------
def _adsr(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    seconds = rng.uniform((0.005, 0.02, 0.02), (0.03, 0.1, 0.12))  # attack, decay, release
    attack, decay, release = (int(sample_rate * t) for t in seconds)
    sustain = rng.uniform(0.4, 0.8)
    envelope = np.full(length, sustain)
    # Segments are clipped to the note's length, so short notes keep a clean attack.
    envelope[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)[:length]
    decay_end = min(attack + decay, length)
    envelope[attack:decay_end] = np.linspace(1.0, sustain, decay, endpoint=False)[:max(decay_end - attack, 0)]
    release = min(release, length)
    envelope[length - release:] *= np.linspace(1.0, 0.0, release)
    return envelope


def _phrase(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    scale = _SCALES[rng.integers(len(_SCALES))]
    root_midi = rng.integers(48, 67)  # C3 .. F#4
    note_seconds = rng.uniform(0.1, 0.3)
    harmonics = rng.uniform(0.0, 0.5, size=3)  # amplitudes of the 2nd..4th harmonics
    phrase = np.zeros(samples)
    note_samples = max(int(note_seconds * sample_rate), 1)
    t = np.arange(note_samples) / sample_rate
    for start in range(0, samples, note_samples):
        if rng.uniform() < 0.15:
            continue  # a rest
        degree = rng.integers(len(scale) * 2)
        chord = (0, 2, 4) if rng.uniform() < 0.2 else (0,)
        note = np.zeros(note_samples)
        for step in chord:
            octave, index = divmod(degree + step, len(scale))
            frequency = 440.0 * 2.0 ** ((root_midi + 12 * octave + scale[index] - 69) / 12)
            for harmonic, amplitude in enumerate((1.0, *harmonics), start=1):
                if harmonic * frequency < sample_rate / 2:  # keep below Nyquist: no aliasing
                    note += amplitude * np.sin(2 * np.pi * harmonic * frequency * t)
        note *= _adsr(note_samples, sample_rate, rng)
        stop = min(start + note_samples, samples)
        phrase[start:stop] = note[:stop - start]
    peak = np.abs(phrase).max()
    return phrase * (rng.uniform(0.5, 0.9) / peak) if peak > 0 else phrase


def synth_phrases(n: int, seconds: float = DEFAULT_SECONDS, sample_rate: int = DEFAULT_SAMPLE_RATE,
                  seed: int = 0) -> torch.Tensor:
    """`n` synthetic musical phrases: float32 tensor (n, round(seconds * sample_rate)) in [-1, 1].

    The same (n, seconds, sample_rate, seed) always gives the same audio; phrase i depends only on
    the seed and i, so a larger n extends a smaller draw.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    samples = int(round(seconds * sample_rate))
    if samples <= 0:
        raise ValueError(f"seconds must give at least one sample, got seconds={seconds!r}")
    phrases = [_phrase(samples, sample_rate, np.random.default_rng([int(seed), i])) for i in range(n)]
    return torch.from_numpy(np.stack(phrases).astype(np.float32))


# -- WAV files -------------------------------------------------------------------------------
def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an integer-PCM WAV file as mono float32 in [-1, 1].

    Returns (audio (samples,), rate). With `sample_rate` given, audio at another rate is resampled
    by linear interpolation and rate is `sample_rate`. Raises ValueError naming the file when it
    is not a readable PCM WAV.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise ValueError(f"cannot read WAV file {str(path)!r}: {error}") from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate <= 0:
        raise ValueError(f"WAV file {str(path)!r} has unsupported format: {channels} channels, "
                         f"{8 * width}-bit samples, {rate} Hz (expected 8/16/24/32-bit integer PCM)")
    if len(frames) % (width * channels):
        raise ValueError(f"WAV file {str(path)!r} is truncated mid-frame")
    raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, width)
    if width == 1:
        values = (raw[:, 0].astype(np.float64) - 128.0) / 128.0  # 8-bit WAV is unsigned
    else:
        # Little-endian signed integers: place the bytes at the top of an int32, then scale.
        padded = np.zeros((raw.shape[0], 4), dtype=np.uint8)
        padded[:, 4 - width:] = raw
        values = padded.view("<i4")[:, 0].astype(np.float64) / 2.0**31
    audio = values.reshape(-1, channels).mean(axis=1)  # (samples,) mono
    if sample_rate is not None and rate != sample_rate and audio.size > 0:
        duration = audio.size / rate
        new_times = np.arange(int(round(duration * sample_rate))) / sample_rate
        audio = np.interp(new_times, np.arange(audio.size) / rate, audio)
        rate = sample_rate
    return audio.astype(np.float32), rate


def audio_files(path: str | os.PathLike) -> list[Path]:
    """The WAV files a user path names: the file itself, or *.wav under a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"audio source {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"audio folder {str(path)!r} has no .wav files")
    return files


class AudioDataset(Dataset):
    """Clips of `seconds` audio at `sample_rate`: float32 (samples,) in [-1, 1], or int64 mu-law
    codes 0..255 with form="mulaw".

    source="synth" draws n phrases (default 256 train, 32 val / test) from a seed derived from
    `seed` and the split. A path reads its WAV files and cuts them into clips (a tail shorter than
    a clip is dropped); split "all" keeps every clip.
    """

    kind = "audio"

    def __init__(self, source: str | os.PathLike = "synth", split: str = "train",
                 seconds: float = DEFAULT_SECONDS, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 n: int | None = None, seed: int = 0, form: str = "float"):
        if form not in ("float", "mulaw"):
            raise ValueError(f"form must be 'float' or 'mulaw', got {form!r}")
        self.source, self.split, self.form = str(source), split, form
        self.sample_rate = sample_rate
        if self.source == "synth":
            check_split(split, SPLITS)
            count = DEFAULT_SIZES[split] if n is None else n
            self.clips = synth_phrases(count, seconds, sample_rate, split_seed(seed, split))
        else:
            check_split(split, FILE_SPLITS)
            self.clips = self._clips_from_files(source, split, seconds, sample_rate, n)

    @staticmethod
    def _clips_from_files(source, split, seconds, sample_rate, n) -> torch.Tensor:
        clip_samples = int(round(seconds * sample_rate))
        if clip_samples <= 0:
            raise ValueError(f"seconds must give at least one sample, got seconds={seconds!r}")
        clips = []
        for path in audio_files(source):
            audio, _ = read_wav(path, sample_rate)
            whole = audio.size // clip_samples
            clips += list(audio[:whole * clip_samples].reshape(whole, clip_samples))
        if not clips:
            raise ValueError(f"audio source {str(source)!r} has no clip of {seconds} s "
                             f"({clip_samples} samples at {sample_rate} Hz); use shorter clips")
        chosen = split_indices(len(clips), split)[:n]
        if not chosen:
            raise ValueError(f"split {split!r} of audio source {str(source)!r} is empty: "
                             f"{len(clips)} clips in all (every 20th goes to val and to test)")
        return torch.from_numpy(np.stack([clips[i] for i in chosen]))  # (n, clip_samples)

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.clips[index]
        return mu_law_encode(clip) if self.form == "mulaw" else clip

    def __repr__(self) -> str:
        return (f"AudioDataset({self.source!r}, split={self.split!r}, clips={len(self)}, "
                f"samples={self.clips.shape[1]}, sample_rate={self.sample_rate}, form={self.form!r})")


def write_wav(file, audio, sample_rate: int) -> None:
    """Write mono audio (samples,) in [-1, 1] (clipped) as a 16-bit PCM WAV file.

    file: a path or a binary file object (io.BytesIO for the bytes); audio: numpy or torch.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    samples = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (samples,), got shape {samples.shape}")
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(file if not isinstance(file, (str, os.PathLike)) else str(file), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm.tobytes())

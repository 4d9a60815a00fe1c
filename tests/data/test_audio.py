import wave

import numpy as np
import pytest
import torch

from genkernels.data.audio import AudioDataset, mu_law_decode, mu_law_encode, read_wav, synth_phrases


def write_wav(path, samples: np.ndarray, rate: int, width: int):
    """samples (frames, channels) in [-1, 1] as integer PCM of `width` bytes."""
    if width == 1:
        raw = np.round(samples * 127 + 128).astype(np.uint8).tobytes()
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        raw = np.round(samples * (2 ** (8 * width - 1) - 1)).astype(dtype).tobytes()
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(samples.shape[1])
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(raw)


def test_synth_phrases_are_seeded_and_bounded():
    audio = synth_phrases(4, seconds=0.5, sample_rate=8000, seed=1)
    assert audio.shape == (4, 4000) and audio.dtype == torch.float32
    assert audio.abs().max() <= 1.0 and audio.std() > 0.05
    assert torch.equal(audio, synth_phrases(4, seconds=0.5, sample_rate=8000, seed=1))
    assert not torch.equal(audio, synth_phrases(4, seconds=0.5, sample_rate=8000, seed=2))
    assert torch.equal(audio[:2], synth_phrases(2, seconds=0.5, sample_rate=8000, seed=1))


def test_synth_dataset_splits_differ():
    train = AudioDataset("synth", "train", seconds=0.25, n=3)
    test = AudioDataset("synth", "test", seconds=0.25, n=3)
    assert len(train) == 3 and train[0].shape == (2000,) and train.kind == "audio"
    assert not torch.equal(train.clips, test.clips)
    codes = AudioDataset("synth", "train", seconds=0.25, n=3, form="mulaw")[0]
    assert codes.dtype == torch.int64 and torch.equal(codes, mu_law_encode(train[0]))


def test_mu_law_round_trip():
    audio = torch.linspace(-1, 1, 2001)
    codes = mu_law_encode(audio)
    assert codes.min() == 0 and codes.max() == 255
    assert torch.all(codes[1:] >= codes[:-1])  # monotone
    decoded = mu_law_decode(codes)
    # Steps are fine near 0 and coarse near +-1, as mu-law intends.
    assert (decoded - audio).abs().max() < 0.035
    assert (decoded - audio)[audio.abs() < 0.01].abs().max() < 1e-3
    assert torch.equal(mu_law_encode(mu_law_decode(torch.arange(256))), torch.arange(256))


@pytest.mark.parametrize("width", [1, 2, 4])
def test_read_wav_bit_depths_and_stereo(tmp_path, width):
    t = np.arange(800) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.ones_like(t)
    write_wav(tmp_path / "x.wav", np.stack([left, right], axis=1), 8000, width)
    audio, rate = read_wav(tmp_path / "x.wav")
    assert rate == 8000 and audio.dtype == np.float32 and audio.shape == (800,)
    np.testing.assert_allclose(audio, (left + right) / 2, atol=2.0 / 2 ** (8 * width - 1) + 1e-6)


def test_read_wav_resamples_linearly(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 1600)[:, None]
    write_wav(tmp_path / "x.wav", ramp, 16000, 2)
    audio, rate = read_wav(tmp_path / "x.wav", sample_rate=8000)
    assert rate == 8000 and audio.shape == (800,)
    np.testing.assert_allclose(audio, ramp[::2, 0], atol=1e-4)


def test_wav_folder_dataset(tmp_path):
    for i in range(2):
        write_wav(tmp_path / f"{i}.wav", np.full((8000 * 5, 1), 0.1 * (i + 1)), 8000, 2)
    dataset = AudioDataset(tmp_path, "all", seconds=0.25)
    assert len(dataset) == 40 and dataset[0].shape == (2000,)
    assert len(AudioDataset(tmp_path, "train", seconds=0.25)) == 36
    test = AudioDataset(tmp_path, "test", seconds=0.25)
    assert len(test) == 2 and torch.allclose(test[1], torch.full((2000,), 0.2), atol=1e-4)


def test_malformed_wav_is_named(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ValueError, match="broken.wav"):
        read_wav(tmp_path / "broken.wav")
    with pytest.raises(ValueError, match="broken.wav"):
        AudioDataset(tmp_path, "all")


def test_float_wav_is_rejected(tmp_path):
    path = tmp_path / "float.wav"
    write_wav(path, np.zeros((100, 1)), 8000, 4)
    data = bytearray(path.read_bytes())
    data[20:22] = (3).to_bytes(2, "little")  # WAVE_FORMAT_IEEE_FLOAT instead of PCM
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="float.wav"):
        read_wav(path)


def test_bad_audio_sources(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        AudioDataset(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="no .wav files"):
        AudioDataset(tmp_path, "all")
    write_wav(tmp_path / "short.wav", np.zeros((100, 1)), 8000, 2)
    with pytest.raises(ValueError, match="no clip"):
        AudioDataset(tmp_path, "all", seconds=1.0)
    with pytest.raises(ValueError, match="is empty"):
        AudioDataset(tmp_path, "test", seconds=0.01)  # 1 clip: nothing for val or test
    with pytest.raises(ValueError, match="form"):
        AudioDataset("synth", form="wav")

import io
import wave

import numpy as np
import pytest
import torch

pytest.importorskip("music21")
pytest.importorskip("mido")

from genkernels.data import get_dataset  # noqa: E402
from genkernels.data import music  # noqa: E402
from genkernels.data.music import (  # noqa: E402
    BOS, EOS, EVENT_VOCAB_SIZE, GRID_VOCAB_SIZE, ChoralesDataset, MidiFolderDataset, Piece, chorale_paths,
    decode_events, decode_grid_tokens, encode_events, encode_grid_tokens, events_to_midi, grid_to_notes,
    load_chorales, midi_to_events, midi_to_grid, notes_to_grid, parse_score, render_wav, split_pieces,
)


@pytest.fixture(scope="module")
def bwv66():
    return parse_score(chorale_paths()[0].parent / "bwv66.6.mxl")


def hand_made():
    """Repeated notes, a rest, a note longer than the largest time shift, a silent voice."""
    notes = np.array([(0, 2, 72, 0), (2, 2, 72, 0), (6, 20, 74, 0),   # soprano: C C, rest, long D
                      (0, 4, 64, 1), (4, 22, 65, 1),                   # alto
                      (0, 26, 48, 3)])                                 # bass; tenor silent
    return notes_to_grid(notes)


def test_known_chorale_parses(bwv66):
    assert bwv66.name == "bwv66.6" and bwv66.grid.shape == (144, 4)
    assert bwv66.time_signature == (4, 4) and bwv66.key_sharps == 3  # F-sharp minor, 3 sharps
    assert bwv66.grid[0].tolist() == [73, 64, 57, 57]  # C#5 E4 A3 A3
    assert (bwv66.grid > 0).all()  # four voices sound throughout
    # Repeated pitches within a voice are separate notes where the score has two notes.
    assert bwv66.onsets[:, 0].sum() < (bwv66.grid[:, 0] > 0).sum()


def test_known_chorale_round_trips_through_midi(bwv66, tmp_path):
    data = events_to_midi(bwv66.events(), tmp_path / "bwv66.6.mid", bpm=90)
    assert (tmp_path / "bwv66.6.mid").read_bytes() == data
    tokens = midi_to_events(tmp_path / "bwv66.6.mid")
    grid, onsets = decode_events(tokens)
    assert np.array_equal(grid, bwv66.grid) and np.array_equal(onsets, bwv66.onsets)
    assert np.array_equal(grid_to_notes(grid, onsets), grid_to_notes(bwv66.grid, bwv66.onsets))
    # A grid goes in as well, and bytes read back the same way.
    grid2, onsets2 = midi_to_grid(events_to_midi(bwv66.grid, onsets=bwv66.onsets))
    assert np.array_equal(grid2, bwv66.grid) and np.array_equal(onsets2, bwv66.onsets)
    # A MIDI file from another writer (music21's) reads back with the same notes.
    music21 = pytest.importorskip("music21")
    music21.converter.parse(str(chorale_paths()[0].parent / "bwv66.6.mxl")).write("midi", fp=tmp_path / "m21.mid")
    grid3, onsets3 = midi_to_grid(tmp_path / "m21.mid")
    assert np.array_equal(grid3, bwv66.grid) and np.array_equal(onsets3, bwv66.onsets)


def test_events_round_trip_and_vocabulary():
    grid, onsets = hand_made()
    tokens = encode_events(grid, onsets)
    assert tokens.dtype == np.int64 and tokens[0] == BOS and tokens[-1] == EOS
    assert tokens.min() >= 0 and tokens.max() < EVENT_VOCAB_SIZE
    back_grid, back_onsets = decode_events(tokens)
    assert np.array_equal(back_grid, grid) and np.array_equal(back_onsets, onsets)
    assert back_onsets[:, 0].sum() == 3  # C, C again, D
    # Hand-decoded start: soprano C5, alto E4, bass C3, then two 16ths.
    assert tokens[1:5].tolist() == [music.note_token(0, 72), music.note_token(1, 64), music.note_token(3, 48),
                                    music.shift_token(2)]
    # A model's raw sample: PAD / BOS are skipped and decoding stops at EOS.
    noisy = np.concatenate([[0, BOS], tokens[1:], [music.note_token(2, 60), music.shift_token(4)]])
    assert np.array_equal(decode_events(noisy)[0], grid)
    with pytest.raises(ValueError, match="event tokens must be in 0..534"):
        decode_events(np.array([BOS, EVENT_VOCAB_SIZE]))
    with pytest.raises(ValueError, match="grid must have shape"):
        encode_events(np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match="0..127"):
        encode_events(np.full((4, 4), 128))


def test_grid_tokens_round_trip():
    grid, onsets = hand_made()
    tokens = encode_grid_tokens(grid, onsets)
    assert tokens.shape == (1 + 4 * grid.shape[0],) and tokens.max() < GRID_VOCAB_SIZE
    back_grid, back_onsets = decode_grid_tokens(tokens)
    assert np.array_equal(back_grid, grid) and np.array_equal(back_onsets, onsets)


def test_split_is_by_piece_deterministic_and_disjoint():
    parts = {s: split_pieces(413, s) for s in ("train", "val", "test")}
    assert parts == {s: split_pieces(413, s) for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == list(range(413))
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (330, 41, 42)
    with pytest.raises(ValueError, match="split must be one of"):
        split_pieces(10, "dev")


def test_load_chorales_caches_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("GENKERNELS_CACHE", str(tmp_path))
    test_pieces = load_chorales("test", max_pieces=2, workers=1)
    assert len(test_pieces) == 2 and all(isinstance(p, Piece) for p in test_pieces)
    names = [p.name for p in chorale_paths()]
    test_names = {names[i].rsplit(".", 1)[0] for i in split_pieces(len(names), "test")}
    assert {p.name for p in test_pieces} <= test_names
    assert list(tmp_path.glob("chorales-music21-*.npz"))

    def no_parsing(path):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(music, "parse_score", no_parsing)
    again = load_chorales("test", max_pieces=2, workers=1)
    assert [p.name for p in again] == [p.name for p in test_pieces]
    assert all(np.array_equal(a.grid, b.grid) and np.array_equal(a.onsets, b.onsets)
               for a, b in zip(again, test_pieces))

    events = ChoralesDataset("test", block_size=32, max_pieces=2)
    assert events.kind == "music" and events.vocab_size == EVENT_VOCAB_SIZE and len(events) > 0
    item = events[0]
    assert item.shape == (33,) and item.dtype == torch.int64 and item[0] == BOS
    assert events.tokens.numel() == sum(len(p.events()) for p in events.pieces)
    grid = ChoralesDataset("test", form="grid", block_size=16, max_pieces=2)
    assert grid.vocab_size == GRID_VOCAB_SIZE and grid[0].shape == (17,) and int(grid.tokens.max()) < 130
    assert np.array_equal(grid.decode(grid.piece_tokens(0))[0], grid.pieces[0].grid)
    with pytest.raises(ValueError, match="form must be"):
        ChoralesDataset("test", form="midi", max_pieces=1)


def test_dataset_from_given_pieces(bwv66):
    pieces = [Piece(f"p{i}", bwv66.grid, bwv66.onsets) for i in range(10)]
    train = ChoralesDataset("train", pieces=pieces, block_size=64)
    test = ChoralesDataset("test", pieces=pieces, block_size=64)
    assert len(train.pieces) == 8 and len(test.pieces) == 1
    assert not {p.name for p in train.pieces} & {p.name for p in test.pieces}


def test_midi_folder_dataset_and_corrupt_file(tmp_path, bwv66):
    folder = tmp_path / "songs"
    folder.mkdir()
    for i in range(3):
        events_to_midi(bwv66, folder / f"song{i}.mid")
    dataset = get_dataset(folder, "all", block_size=32)
    assert isinstance(dataset, MidiFolderDataset) and dataset.kind == "music"
    assert len(dataset.pieces) == 3 and np.array_equal(dataset.pieces[0].grid, bwv66.grid)
    assert dataset[0].dtype == torch.int64 and dataset[0].shape == (33,)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    with pytest.raises(ValueError, match="cannot read MIDI file .*broken.mid"):
        MidiFolderDataset(folder, "all")
    (folder / "broken.mid").write_bytes((folder / "song0.mid").read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="broken.mid"):
        get_dataset(folder, "all")
    with pytest.raises(ValueError, match="not a MIDI file"):
        midi_to_grid(b"hello" * 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no midi here")
    with pytest.raises(ValueError, match="no MIDI files"):
        MidiFolderDataset(empty, "all")


def test_render_wav(bwv66):
    audio, data = render_wav(bwv66.grid[:32], sample_rate=8000, bpm=120)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0 and audio.std() > 0.01
    assert audio.shape == (int(round((32 * 0.125 + 0.1) * 8000)),)
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == 8000 and reader.getnframes() == audio.size
    same, _ = render_wav(bwv66.grid[:32], sample_rate=8000, bpm=120)
    assert np.array_equal(audio, same)
    with pytest.raises(ValueError, match="sample_rate"):
        render_wav(bwv66.grid, sample_rate=0)

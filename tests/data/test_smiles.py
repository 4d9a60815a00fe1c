import importlib.util
import sys

import numpy as np
import pytest
import torch

from genkernels.data import get_dataset, smiles
from genkernels.data.smiles import (MosesDataset, SmilesDataset, SmilesFileDataset, SmilesTokenizer,
                                    load_moses_smiles, moses_data_dir, read_smiles_file)

needs_moses = pytest.mark.skipif(importlib.util.find_spec("moses") is None, reason="molsets wheel not installed")
needs_rdkit = pytest.mark.skipif(importlib.util.find_spec("rdkit") is None, reason="rdkit not installed")
needs_selfies = pytest.mark.skipif(importlib.util.find_spec("selfies") is None, reason="selfies not installed")

BOS, EOS, PAD = SmilesTokenizer.BOS, SmilesTokenizer.EOS, SmilesTokenizer.PAD


def test_tokens_by_hand():
    tokenizer = SmilesTokenizer([])
    assert tokenizer.tokenize("ClC(Br)c1cc[nH]c1") == ["Cl", "C", "(", "Br", ")", "c", "1", "c", "c", "[nH]", "c", "1"]
    assert tokenizer.tokenize("C[C@@H](N)C(=O)[O-]") == ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "[O-]"]
    assert tokenizer.tokenize("C%10CC%(123)C/C=C\\C#N.[Na+]") == [
        "C", "%10", "C", "C", "%(123)", "C", "/", "C", "=", "C", "\\", "C", "#", "N", ".", "[Na+]"]
    assert tokenizer.tokenize("c1ccccc12") == ["c", "1", "c", "c", "c", "c", "c", "1", "2"]  # digits one by one
    assert tokenizer.tokenize("") == []
    with pytest.raises(ValueError, match=r"character 'X' at position 2"):
        tokenizer.tokenize("CCXC")
    with pytest.raises(TypeError, match="SMILES str"):
        tokenizer.tokenize(12)


def test_fit_encode_decode_and_json():
    strings = ["CCO", "c1ccccc1Cl", "C[NH3+]"]
    tokenizer = SmilesTokenizer.fit(strings)
    assert tokenizer.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tokenizer.tokens[4:] == sorted({"C", "O", "c", "1", "Cl", "[NH3+]"})
    assert tokenizer == SmilesTokenizer.fit(list(reversed(strings)))  # order-free, deterministic
    ids = tokenizer.encode("CCO")
    assert ids[0] == BOS and ids[-1] == EOS and len(ids) == 5
    assert tokenizer.encode("CCO", bos=False, eos=False) == ids[1:-1]
    assert tokenizer.decode(ids + [PAD, PAD]) == "CCO"
    assert tokenizer.decode([BOS, *ids[1:3], EOS, *ids[1:3]]) == "CC"  # stops at EOS
    assert tokenizer.encode("CBr")[2] == SmilesTokenizer.UNK and tokenizer.decode(tokenizer.encode("CBr")) == "C<unk>"
    with pytest.raises(ValueError, match="token id 99 out of range"):
        tokenizer.decode([99])
    assert SmilesTokenizer.from_json(tokenizer.to_json()) == tokenizer
    with pytest.raises(ValueError, match="not a SmilesTokenizer JSON"):
        SmilesTokenizer.from_json('{"type": "byte"}')
    rows, kept = tokenizer.encode_batch(strings + ["CCCCCCCCCCCC"], max_len=11)
    assert kept.tolist() == [0, 1, 2] and rows.dtype == np.uint8 and rows.shape == (3, 11)
    assert tokenizer.decode_batch(rows) == strings
    assert [tokenizer.decode(row) for row in rows] == strings


def test_batch_encoding_matches_per_string_encoding_on_unusual_tokens():
    strings = ["C[C@@H](N)C(=O)[O-]", "C%10CC%(123)C/C=C\\C#N.[Na+]", "ClC(Br)c1cc[nH]c1", "", "*C",
               "[2H]C([2H])Br", "C$C", "c1ccccc1>CC", "[Se]", "F/C=C/F", "N#[N+][O-]", "B(Br)Cl"]
    tokenizer = SmilesTokenizer.fit(strings)
    rows, kept = tokenizer.encode_batch(strings)
    assert kept.tolist() == list(range(len(strings)))
    for row, s in zip(rows, strings):
        ids = tokenizer.encode(s)
        assert row[:len(ids)].tolist() == ids and not row[len(ids):].any()
    assert tokenizer.decode_batch(rows) == strings
    with pytest.raises(ValueError, match=r"cannot tokenize SMILES 'C%1': character '%' at position 1"):
        SmilesDataset(["CC", "C%1"])
    with pytest.raises(ValueError, match=r"cannot tokenize SMILES 'CéC'"):
        tokenizer.encode_batch(["CC", "CéC"])  # non-ASCII: the findall path


@needs_moses
def test_tokenizer_round_trips_every_moses_training_smiles():
    train = load_moses_smiles("train")
    assert len(train) == 1_584_663
    tokenizer = SmilesTokenizer.moses()
    assert {"Cl", "Br", "[nH]", "[H]"} <= set(tokenizer.tokens) and tokenizer.vocab_size == 28
    rows, kept = tokenizer.encode_batch(train)  # every string, freshly tokenized (no cache)
    assert len(kept) == len(train) and rows.shape[1] == 56
    assert not (rows == SmilesTokenizer.UNK).any()
    assert tokenizer.decode_batch(rows) == train  # decode(encode(s)) == s for all 1,584,663
    sample = np.random.default_rng(0).choice(len(train), 20_000, replace=False)
    for i in sample:  # the per-string API agrees with the batch path
        s = train[i]
        assert "".join(tokenizer.tokenize(s)) == s
        ids = tokenizer.encode(s)
        assert tokenizer.decode(ids) == s
        assert rows[i, :len(ids)].tolist() == ids and not rows[i, len(ids):].any()


@needs_selfies
@needs_rdkit
@needs_moses
def test_selfies_round_trip_gives_the_same_molecule():
    from genkernels.chem import canonical_smiles

    molecules = load_moses_smiles("test")[:300]
    tokenizer = SmilesTokenizer.fit(molecules, form="selfies")
    assert tokenizer.form == "selfies" and all(t.startswith("[") for t in tokenizer.tokens[4:])
    assert "[Branch1]" in tokenizer.tokens
    for s in molecules:
        assert canonical_smiles(tokenizer.decode(tokenizer.encode(s))) == canonical_smiles(s)
    rows, kept = tokenizer.encode_batch(molecules)
    assert len(kept) == 300
    assert [canonical_smiles(s) for s in tokenizer.decode_batch(rows)] == [canonical_smiles(s) for s in molecules]
    assert SmilesTokenizer.from_json(tokenizer.to_json()) == tokenizer
    dataset = SmilesDataset(["CCO", "C(C", "c1ccccc1"], tokenizer=tokenizer)  # SELFIES refuses "C(C"
    assert dataset.smiles == ["CCO", "c1ccccc1"] and dataset.dropped == 1
    assert canonical_smiles(tokenizer.decode(dataset[1])) == "c1ccccc1"
    with pytest.raises(ValueError, match="cannot encode SMILES 'C\\(C' as SELFIES"):
        tokenizer.encode("C(C")


def test_selfies_without_the_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "selfies", None)  # `import selfies` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install .*genkernels\[chem\]"):
        SmilesTokenizer.fit(["CCO"], form="selfies")
    assert SmilesTokenizer.fit(["CCO"]).tokenize("OCC") == ["O", "C", "C"]  # the SMILES form needs nothing


def test_dataset_shapes_padding_and_dropping():
    strings = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C"]
    dataset = SmilesDataset(strings, source="hand")
    assert len(dataset) == 4 and dataset.kind == "smiles" and dataset.dropped == 0
    assert dataset.max_len == 18 + 2 and dataset.tokens.dtype == torch.uint8
    assert dataset.tokens.shape == (4, dataset.max_len)
    item = dataset[0]
    assert item.dtype == torch.int64 and item.shape == (dataset.max_len,)
    assert item[:5].tolist() == [BOS, *dataset.tokenizer.encode("CCO", bos=False, eos=False), EOS]
    assert (item[5:] == PAD).all()
    assert dataset.tokenizer.decode(dataset[2]) == strings[2]
    short = SmilesDataset(strings, tokenizer=dataset.tokenizer, max_len=10)
    assert short.smiles == ["CCO", "c1ccccc1", "C"] and short.dropped == 1 and short.tokens.shape == (3, 10)
    with pytest.raises(IndexError):
        dataset[4]
    with pytest.raises(ValueError, match="max_len must be an int >= 3"):
        SmilesDataset(strings, max_len=2)
    with pytest.raises(ValueError, match="empty list"):
        SmilesDataset([])
    with pytest.raises(TypeError, match="list of SMILES strings"):
        SmilesDataset("CCO")


@needs_moses
def test_moses_splits_share_vocab_and_length_and_val_is_held_out():
    val = MosesDataset("val")
    train = MosesDataset("train")
    whole = load_moses_smiles("train")
    assert len(val) == 10_000 and len(train) + len(val) == len(whole)
    assert not set(val.smiles) & set(train.smiles)
    assert train.tokens.dtype == torch.uint8 and train.tokens.shape == (len(train), 56)
    test = MosesDataset("test", max_items=1000)
    scaffolds = MosesDataset("test_scaffolds", max_items=1000)
    for other in (train, test, scaffolds):
        assert other.tokenizer == val.tokenizer and other.max_len == val.max_len == 56
    assert val.tokenizer is SmilesTokenizer.moses()  # cached per process
    assert val.tokenizer.decode_batch(val.tokens[:50]) == val.smiles[:50]
    assert val.tokenizer.decode_batch(test.tokens) == test.smiles
    assert set(test.smiles) <= set(load_moses_smiles("test"))
    with pytest.raises(ValueError, match="split must be one of"):
        MosesDataset("validation")


@needs_moses
def test_moses_max_items_is_a_seeded_subset():
    first = MosesDataset("train", max_items=500, seed=1)
    assert len(first) == 500 and first.smiles == MosesDataset("train", max_items=500, seed=1).smiles
    assert first.smiles != MosesDataset("train", max_items=500, seed=2).smiles
    val = set(MosesDataset("val").smiles)
    assert not set(first.smiles) & val
    assert torch.equal(first.tokens, MosesDataset("train", max_items=500, seed=1).tokens)
    custom = MosesDataset("val", max_items=100, tokenizer=SmilesTokenizer.fit(["CCO", "c1ccccc1"]))
    assert custom.max_len == max(len(custom.tokenizer.tokenize(s)) for s in custom.smiles) + 2


def test_missing_wheel_names_the_install(monkeypatch):
    monkeypatch.setattr(smiles.importlib.util, "find_spec", lambda name, *args: None)
    monkeypatch.setattr(smiles, "_MOSES_SMILES", {})
    with pytest.raises(ImportError, match=r"pip install --no-deps molsets"):
        moses_data_dir()
    with pytest.raises(ImportError, match=r"genkernels\[chem\]"):
        load_moses_smiles("test")


@needs_moses
def test_get_dataset_moses_and_dataloader():
    assert len(get_dataset("moses", "val")) == 10_000
    dataset = get_dataset("moses", "val", max_items=64)
    assert isinstance(dataset, MosesDataset) and len(dataset) == 64 and dataset.split == "val"
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=16)))
    assert batch.shape == (16, 56) and batch.dtype == torch.int64 and (batch[:, 0] == BOS).all()


@needs_rdkit
@needs_moses
def test_with_properties_drops_invalid_and_caches_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("GENKERNELS_CACHE", str(tmp_path))
    val = MosesDataset("val")
    labelled = val.with_properties(max_items=40, seed=3)
    assert len(labelled) == 40 and labelled.properties.shape == (40, 3)
    assert labelled.properties.dtype == np.float32 and np.isfinite(labelled.properties).all()
    assert ((labelled.properties[:, 0] > 0) & (labelled.properties[:, 0] < 1)).all()  # QED
    assert ((labelled.properties[:, 2] >= 1) & (labelled.properties[:, 2] <= 10)).all()  # SA
    tokens, props = labelled[0]
    assert tokens.shape == (56,) and props.dtype == torch.float32 and props.shape == (3,)
    assert set(labelled.smiles) <= set(val.smiles)
    assert len(list(tmp_path.glob("moses-properties-*.npy"))) == 1

    def no_rdkit(smiles_list):
        raise AssertionError("properties should come from the disk cache")

    monkeypatch.setattr(smiles, "_property_rows", no_rdkit)
    again = MosesDataset("val").with_properties(max_items=40, seed=3)
    assert again.smiles == labelled.smiles and np.array_equal(again.properties, labelled.properties)

    monkeypatch.undo()
    plain = SmilesDataset(["CCO", "C1CC", "c1ccccc1O"], properties=True)  # C1CC: unclosed ring
    assert plain.smiles == ["CCO", "c1ccccc1O"] and plain.dropped == 1 and plain.properties.shape == (2, 3)


def test_smi_file_and_splits(tmp_path):
    molecules = [f"C{'C' * (i % 7)}O" for i in range(40)]
    path = tmp_path / "mols.smi"
    path.write_text("smiles name\n" + "\n".join(f"{s} mol{i}" for i, s in enumerate(molecules)) + "\n\n")
    assert read_smiles_file(path) == molecules
    parts = {split: SmilesFileDataset(path, split) for split in ("train", "val", "test", "all")}
    assert [len(parts[s]) for s in ("train", "val", "test", "all")] == [36, 2, 2, 40]
    assert parts["val"].smiles == [molecules[18], molecules[38]]
    assert parts["val"].max_len == parts["train"].max_len == 8 + 2
    assert parts["val"].tokenizer == parts["train"].tokenizer
    via_registry = get_dataset(str(path), "test")
    assert isinstance(via_registry, SmilesFileDataset) and via_registry.smiles == parts["test"].smiles
    csv_path = tmp_path / "mols.csv"
    csv_path.write_text("id,SMILES,score\n" + "\n".join(f"{i},{s},0.5" for i, s in enumerate(molecules)))
    assert read_smiles_file(csv_path) == molecules
    assert get_dataset(csv_path, "all", kind="smiles").smiles == molecules
    first_column = tmp_path / "plain.csv"
    first_column.write_text("molecule,weight\nCCO,46\nc1ccccc1,78\n")
    assert read_smiles_file(first_column) == ["CCO", "c1ccccc1"]


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.smi"
    empty.write_text("SMILES\n\n")
    with pytest.raises(ValueError, match="holds no molecules"):
        read_smiles_file(empty)
    with pytest.raises(ValueError, match="does not exist"):
        read_smiles_file(tmp_path / "missing.smi")


@needs_rdkit
def test_corrupt_lines_are_reported_by_number(tmp_path):
    lines = ["CCO", "C1CC", "c1ccccc1", "not_a_smiles", ""] + ["C(C"] * 11 + ["CC"]
    path = tmp_path / "bad.smiles"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        read_smiles_file(path)
    message = str(error.value)
    assert f"{path}: line 2: cannot parse SMILES 'C1CC'" in message
    assert f"{path}: line 4: cannot parse SMILES 'not_a_smiles'" in message
    assert "line 6: cannot parse SMILES 'C(C'" in message and "line 13:" in message
    assert "line 14:" not in message and "... and 3 more" in message  # ten shown
    assert "13 of 16 SMILES" in message

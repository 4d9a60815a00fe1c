"""Generated seq2seq tasks: correct targets, disjoint and deterministic splits, batching, errors."""
import pytest
import torch
from torch.utils.data import default_collate

from genkernels.data import DATASETS, get_dataset
from genkernels.data.seq2seq_tasks import (BOS, EOS, PAD, TASKS, VOCAB_SIZE, Seq2SeqTaskDataset, decode, encode,
                                           generate_problems, split_of)

SIZES = {"train": 400, "val": 100, "test": 100}


@pytest.mark.parametrize("task", TASKS)
def test_splits_are_disjoint_and_deterministic(task):
    splits = {split: generate_problems(task, split, size) for split, size in SIZES.items()}
    sources = {split: {s for s, _ in problems} for split, problems in splits.items()}
    assert all(len(sources[split]) == SIZES[split] for split in SIZES)  # distinct within a split
    assert not sources["train"] & sources["val"] and not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    assert all(split_of(s) == split for split, ss in sources.items() for s in ss)
    assert generate_problems(task, "val", 100) == splits["val"]  # deterministic
    assert generate_problems(task, "val", 30) == splits["val"][:30]  # a prefix of a larger draw
    assert generate_problems(task, "val", 30, seed=1) != splits["val"][:30]


def test_targets_are_right():
    for source, target in generate_problems("arithmetic", "train", 300):
        assert set(source) <= set("0123456789+-*()")
        assert int(target) == eval(source)
    assert any("(" in s for s, _ in generate_problems("arithmetic", "train", 300))
    assert any(t.startswith("-") for _, t in generate_problems("arithmetic", "train", 300))
    for source, target in generate_problems("sort", "test", 50):
        assert target == "".join(sorted(source)) and source.isdigit()
    for source, target in generate_problems("reverse", "test", 50, min_len=3, max_len=5):
        assert target == source[::-1] and 3 <= len(source) <= 5


@pytest.mark.parametrize("task", TASKS)
def test_items_batch_with_the_default_collate(task):
    data = get_dataset(task, "test", size=20)
    assert data.kind == "seq2seq" and data.task == task and len(data) == 20
    assert data.vocab_size == VOCAB_SIZE and (data.pad_id, data.bos_id, data.eos_id) == (PAD, BOS, EOS)
    src, tgt = default_collate([data[i] for i in range(8)])
    assert src.shape == (8, data.max_src_len) and tgt.shape == (8, data.max_tgt_len)
    assert src.dtype == tgt.dtype == torch.int64
    assert (tgt[:, 0] == BOS).all() and ((tgt == EOS).sum(dim=1) == 1).all()
    for i, (source, target) in enumerate(data.problems[:8]):
        assert data.decode(src[i]) == source and data.decode(tgt[i]) == target
        assert (src[i, len(source):] == PAD).all() and (tgt[i, len(target) + 2:] == PAD).all()


def test_registered_names():
    assert {"arithmetic", "sort", "reverse"} <= set(DATASETS)
    assert get_dataset("sort", "val", size=5, max_len=4).max_src_len == 4


def test_encode_decode():
    assert decode(encode("(3+4)*5-2") + [EOS, 5, 6]) == "(3+4)*5-2"
    assert decode(torch.tensor([BOS, *encode("ab9"), EOS, PAD])) == "ab9"
    assert decode([BOS, 999]) == "?"


def test_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        Seq2SeqTaskDataset("copy")
    with pytest.raises(ValueError, match="split must be one of"):
        Seq2SeqTaskDataset("sort", "dev")
    with pytest.raises(ValueError, match="size=100 is too many"):
        Seq2SeqTaskDataset("sort", "test", size=100, max_len=1)
    with pytest.raises(TypeError, match="size must be an int"):
        Seq2SeqTaskDataset("sort", "test", size=2.0)
    with pytest.raises(ValueError, match="max_len must be >= 3"):
        Seq2SeqTaskDataset("reverse", "test", size=2, min_len=3, max_len=2)
    with pytest.raises(ValueError, match="max_operands must be >= 2"):
        Seq2SeqTaskDataset("arithmetic", "test", size=2, max_operands=1)
    with pytest.raises(ValueError, match="character '/'"):
        encode("8/2")
    with pytest.raises(IndexError, match="out of range"):
        Seq2SeqTaskDataset("sort", "test", size=3)[3]

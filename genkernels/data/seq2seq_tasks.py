"""Sequence-to-sequence tasks generated in code (nothing downloaded): arithmetic, sort, reverse.

Tasks (source -> target strings):
  arithmetic  an integer expression with + - * and, sometimes, one pair of parentheses, to its
              value under the usual precedence: "17+8*2" -> "33", "(5-9)*3" -> "-12". Operands are
              0..max_value (default 20; multiplication factors 0..9, so values stay short),
              2..max_operands (default 3) of them.
  sort        a string of digits to its sorted digits: "5023" -> "0235"
  reverse     a string of digits and lowercase letters to its reverse: "ab3x" -> "x3ba"
Sequence tasks draw lengths uniformly from min_len..max_len.

Splits: problems are drawn from a seeded generator per split (genkernels.data._splits.split_seed)
and a problem belongs to split train / val / test by a stable hash of its source string
(zlib.crc32 mod 100: < 90 train, < 95 val, else test); a draw of the wrong split is discarded.
So the splits are disjoint by construction (a test problem is never seen in training), each split
is deterministic for a seed, and its problems are distinct.

Tokens: one character vocabulary shared by every task (VOCAB): PAD = 0, BOS = 1, EOS = 2, then the
characters. Items are (src, tgt) int64 tensors of fixed lengths (max_src_len,) and (max_tgt_len,),
padded with PAD, so the default collate batches them: src is the source characters, tgt is
BOS + target characters + EOS.
"""
from __future__ import annotations

import random
import zlib

import torch
from torch.utils.data import Dataset

from genkernels.data._splits import SPLITS, check_split, split_seed

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARS = "0123456789+-*()abcdefghijklmnopqrstuvwxyz"
VOCAB: tuple[str, ...] = SPECIALS + tuple(CHARS)
VOCAB_SIZE = len(VOCAB)
_CHAR_ID = {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}
TASKS = ("arithmetic", "sort", "reverse")
DEFAULT_SIZES = {"train": 50_000, "val": 1000, "test": 1000}
_SPLIT_BUCKETS = {"train": range(0, 90), "val": range(90, 95), "test": range(95, 100)}
_LETTERS_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def encode(text: str) -> list[int]:
    """A string of VOCAB characters -> token ids (no BOS/EOS); ValueError naming a bad character."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        return [_CHAR_ID[c] for c in text]
    except KeyError as error:
        raise ValueError(f"text {text!r} has character {error.args[0]!r} outside the vocabulary {CHARS!r}") from None


def decode(tokens) -> str:
    """Token ids (list or 1-d tensor) -> string: stops at the first EOS, skips PAD and BOS; an id outside
    the vocabulary shows as '?'."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    out = []
    for t in tokens:
        t = int(t)
        if t == EOS:
            break
        if t in (PAD, BOS):
            continue
        out.append(VOCAB[t] if len(SPECIALS) <= t < VOCAB_SIZE else "?")
    return "".join(out)


def split_of(source: str) -> str:
    """The split a problem belongs to, by a stable hash of its source string."""
    bucket = zlib.crc32(source.encode()) % 100
    return next(split for split, r in _SPLIT_BUCKETS.items() if bucket in r)


# -- problem generators: rng -> source; solvers: source -> target ---------------------------------
def _arithmetic(rng: random.Random, max_operands: int, max_value: int) -> str:
    count = rng.randint(2, max_operands)
    ops = [rng.choice("+-*") for _ in range(count - 1)]
    numbers = []
    for i in range(count):  # both sides of a * are single digits: products stay short
        beside_mul = (i > 0 and ops[i - 1] == "*") or (i < count - 1 and ops[i] == "*")
        numbers.append(rng.randint(0, 9 if beside_mul else max_value))
    terms = [str(n) for n in numbers]
    if count >= 3 and rng.random() < 0.3:  # one pair of parentheses around two adjacent operands
        i = rng.randrange(count - 1)
        terms[i], terms[i + 1] = "(" + terms[i], terms[i + 1] + ")"
    return "".join(t + o for t, o in zip(terms, ops)) + terms[-1]


def _sequence(rng: random.Random, alphabet: str, min_len: int, max_len: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


SOLVERS = {
    "arithmetic": lambda source: str(eval(source, {"__builtins__": {}})),  # only digits, + - * ( ): safe
    "sort": lambda source: "".join(sorted(source)),
    "reverse": lambda source: source[::-1],
}


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def generate_problems(task: str, split: str, size: int, seed: int = 0, *, max_operands: int = 3,
                      max_value: int = 20, min_len: int = 1, max_len: int = 10) -> list[tuple[str, str]]:
    """`size` distinct (source, target) problems of `task` that belong to `split` (see the module
    docstring); the first n of a larger draw equal a draw of n. ValueError when the task has too
    few problems of the split for `size` (naming size)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    check_split(split, SPLITS)
    size = _check_int("size", size, 1)
    if task == "arithmetic":
        _check_int("max_operands", max_operands, 2)
        _check_int("max_value", max_value, 0)
        make = lambda rng: _arithmetic(rng, max_operands, max_value)  # noqa: E731
    else:
        _check_int("min_len", min_len, 1)
        _check_int("max_len", max_len, min_len)
        alphabet = "0123456789" if task == "sort" else _LETTERS_DIGITS
        make = lambda rng: _sequence(rng, alphabet, min_len, max_len)  # noqa: E731
    rng = random.Random(split_seed(seed, split) * len(TASKS) + TASKS.index(task))
    problems, seen, attempts = [], set(), 0
    limit = 200 * size + 10_000
    while len(problems) < size:
        attempts += 1
        if attempts > limit:
            raise ValueError(f"size={size} is too many: task {task!r} gave only {len(problems)} distinct {split} "
                             f"problems in {limit} draws (use a smaller size or a larger max_value / max_len)")
        source = make(rng)
        if source in seen or split_of(source) != split:
            continue
        seen.add(source)
        problems.append((source, SOLVERS[task](source)))
    return problems


class Seq2SeqTaskDataset(Dataset):
    """(src, tgt) int64 pairs of a generated task; see the module docstring.

    task          "arithmetic", "sort" or "reverse"
    split         "train", "val" or "test" (disjoint problems)
    size          problems in the split (default 50000 train, 1000 val / test)
    seed          seed of the draw (each split derives its own)
    max_operands, max_value   arithmetic: operands per expression (2..max_operands), largest operand
    min_len, max_len          sort / reverse: sequence lengths
    Attributes: kind = "seq2seq", task, split, problems [(source, target)], vocab_size, pad_id,
    bos_id, eos_id, max_src_len, max_tgt_len (the longest possible of the task's settings, BOS and
    EOS included in the target), and encode / decode.
    """

    kind = "seq2seq"
    vocab = VOCAB
    vocab_size = VOCAB_SIZE
    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, task: str = "arithmetic", split: str = "train", size: int | None = None, seed: int = 0, *,
                 max_operands: int = 3, max_value: int = 20, min_len: int = 1, max_len: int = 10):
        check_split(split, SPLITS)
        self.task, self.split, self.seed = task, split, seed
        size = DEFAULT_SIZES[split] if size is None else size
        self.options = {"max_operands": max_operands, "max_value": max_value, "min_len": min_len,
                        "max_len": max_len}
        self.problems = generate_problems(task, split, size, seed, **self.options)
        if task == "arithmetic":  # operands, operators and one pair of parentheses
            digits = len(str(max_value))
            self.max_src_len = max_operands * digits + (max_operands - 1) + 2
            largest = max_operands * max(max_value, 9 ** max_operands)  # a bound on |value|
            self.max_tgt_len = 3 + len(str(largest))  # BOS, "-", digits, EOS
        else:
            self.max_src_len, self.max_tgt_len = max_len, max_len + 2
        longest_src = max(len(s) for s, _ in self.problems)
        longest_tgt = max(len(t) for _, t in self.problems) + 2
        assert longest_src <= self.max_src_len and longest_tgt <= self.max_tgt_len, (longest_src, longest_tgt)
        self.src = torch.tensor([encode(s) + [PAD] * (self.max_src_len - len(s)) for s, _ in self.problems],
                                dtype=torch.int64)  # (N, max_src_len)
        self.tgt = torch.tensor([[BOS, *encode(t), EOS] + [PAD] * (self.max_tgt_len - len(t) - 2)
                                 for _, t in self.problems], dtype=torch.int64)  # (N, max_tgt_len)

    encode = staticmethod(encode)
    decode = staticmethod(decode)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} problems")
        return self.src[index], self.tgt[index]  # (max_src_len,), (max_tgt_len,)

    def __repr__(self) -> str:
        return (f"Seq2SeqTaskDataset({self.task!r}, split={self.split!r}, problems={len(self)}, "
                f"max_src_len={self.max_src_len}, max_tgt_len={self.max_tgt_len})")


__all__ = ["Seq2SeqTaskDataset", "generate_problems", "encode", "decode", "split_of", "VOCAB", "VOCAB_SIZE",
           "PAD", "BOS", "EOS", "TASKS"]

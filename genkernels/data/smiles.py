"""Molecules as SMILES (or SELFIES) token sequences: the MOSES benchmark, or a user's .smi / .csv file.

Nothing is downloaded. The MOSES splits ship inside the `molsets` wheel
(moses/dataset/data/{train,test,test_scaffolds}.csv.gz); its folder is found with
importlib.util.find_spec, so the `moses` package itself (which needs pomegranate) is never
imported. Install: pip install "genkernels[chem]" && pip install --no-deps molsets

Tokens
------
SmilesTokenizer splits a SMILES string with SMILES_REGEX (the Schwaller et al. 2019 pattern, which
MOSES' CharVocab-free models also use): a bracket atom ("[nH]", "[C@@H]", "[NH3+]") is one token,
as are the two-letter organic atoms Br and Cl, a ring bond "%10" / "%(123)", and every bond, branch
and single-letter atom. The tokens of a string concatenate back to it exactly, and a string with
characters the pattern does not cover is refused. form="selfies" encodes each SMILES to SELFIES
(`selfies` package) and splits it into its bracketed symbols; decode turns SELFIES back to SMILES.
Ids 0..3 are <pad>, <bos>, <eos>, <unk>; the fitted tokens follow, sorted.

MOSES splits
------------
train / val   the wheel's train file (1,584,663 molecules): a fixed 10,000-molecule slice (the first
              10,000 of a permutation with seed 15) is "val", the rest is "train".
test, test_scaffolds
              the wheel's test files (176,074 and 176,226 molecules).
Every split shares SmilesTokenizer.moses(form) (fitted on the whole train file) and one max_len
(the longest tokenized train molecule + BOS + EOS), so a model trained on any subset reads any
split; longer test molecules are dropped and counted in `.dropped`. The encoded train file is
cached on disk under $GENKERNELS_CACHE (else $XDG_CACHE_HOME/genkernels, else ~/.cache/genkernels),
as are properties computed by `with_properties`. The full train split loads in ~10 s the first
time (read, tokenize, pack into an 88 MB uint8 (1,574,663, 56) tensor), ~2 s from the cache. The
SELFIES form encodes ~0.4 ms per molecule: its first MOSES load takes minutes (a process per core).

User files
----------
read_smiles_file reads a .smi / .smiles / .txt file (first whitespace-separated field of each
non-empty line) or a .csv (first row a header; the SMILES / smiles column, else the first column),
checking every molecule with RDKit when it is installed. SmilesFileDataset splits the molecules by
position (every 20th to val and to test) and fits one tokenizer and max_len on the whole file.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels._cache import cache_dir
from genkernels.data._splits import FILE_SPLITS, check_split, split_indices

# Schwaller et al., "Molecular Transformer" (2019), plus "%(NNN)" ring bonds; the order of the
# alternatives matters: "Br" / "Cl" before "B" / "C", "%NN" before a single digit.
SMILES_REGEX = (r"(\[[^\[\]\n]+\]|Br|Cl|%\([0-9]+\)|%[0-9]{2}|[BCNOPSFI]|[bcnops]|[0-9]|\(|\)|\."
                r"|=|#|-|\+|\\|/|:|~|@@|@|\?|>|\*|\$)")
SMILES_EXTENSIONS = (".smi", ".smiles")
SMILES_FORMS = ("smiles", "selfies")
MOSES_SPLITS = ("train", "val", "test", "test_scaffolds")
MOSES_VAL_SIZE = 10_000
_MOSES_VAL_SEED = 15
_MOSES_FILES = ("train", "test", "test_scaffolds")
_CHEM_HINT = 'pip install "genkernels[chem]" && pip install --no-deps molsets'
_CACHE_FORMAT = 1
_CHUNK = 50_000  # strings encoded per chunk: bounds the memory of Python token lists
_MAX_REPORTED = 10

_SMILES_PATTERN = re.compile(SMILES_REGEX)
_SMILES_LINES_PATTERN = re.compile(SMILES_REGEX[:-1] + r"|\n)")  # the same tokens, plus newline
# The fast path of _encode_chunk: SMILES_REGEX's alternatives longer than one character (tried first
# at each position, as in SMILES_REGEX) and its one-character tokens.
_MULTI_CHAR_PATTERN = re.compile(r"\[[^\[\]\n]+\]|Br|Cl|%\([0-9]+\)|%[0-9]{2}|@@")
_SINGLE_CHAR_TOKENS = frozenset(chr(c) for c in range(128) if _SMILES_PATTERN.fullmatch(chr(c)))
_PLACEHOLDER = 0xE000  # past the surrogates (the text is ASCII): stands for one multi-character token

_NEWLINE, _FAILED = -1, -2  # markers inside flat id streams (end of a string; SELFIES encoding failed)


def _import_selfies():
    try:
        import selfies
    except ImportError as error:
        raise ImportError(f'the SELFIES form needs the selfies package: {_CHEM_HINT} ({error})') from None
    return selfies


def _check_form(form) -> str:
    if form not in SMILES_FORMS:
        raise ValueError(f"form must be 'smiles' or 'selfies', got {form!r}")
    return form


def _smiles_tokens(smiles: str) -> list[str]:
    """SMILES_REGEX tokens of one string; ValueError when they do not cover it."""
    tokens = _SMILES_PATTERN.findall(smiles)
    if sum(map(len, tokens)) != len(smiles):
        position = 0
        for token in tokens:  # findall skips what it cannot match: the first gap is the culprit
            found = smiles.index(token, position)
            if found != position:
                break
            position += len(token)
        raise ValueError(f"cannot tokenize SMILES {smiles!r}: character {smiles[position]!r} at "
                         f"position {position} is not part of any SMILES token")
    return tokens


class _LocalIds(dict):
    """token -> id in order of first appearance (a dict whose misses assign the next id)."""

    def __missing__(self, token):
        value = self[token] = len(self)
        return value


def _encode_chunk(strings: Sequence[str], form: str) -> tuple[np.ndarray, list[str]]:
    """Flat local ids of strings, each followed by "\\n" (a SELFIES failure adds "<failed>" first),
    and the local token table (id -> token). Top level, so a process pool can run it."""
    table = _LocalIds()
    if form == "smiles":
        text = "\n".join(strings) + "\n"
        if text.count("\n") != len(strings):
            _raise_untokenizable(strings)  # a string holds a newline
        fast = _encode_ascii_smiles(text) if text.isascii() else None
        if fast is not None:
            return fast
        tokens = _SMILES_LINES_PATTERN.findall(text)
        if "".join(tokens) != text:
            _raise_untokenizable(strings)
        ids = np.fromiter(map(table.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    else:
        sf = _import_selfies()
        tokens = []
        for s in strings:
            try:
                tokens += sf.split_selfies(sf.encoder(s))
            except Exception:  # selfies raises EncoderError (and others) for what it cannot encode
                tokens.append("<failed>")
            tokens.append("\n")
        ids = np.fromiter(map(table.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    return ids, list(table)


def _raise_untokenizable(strings: Sequence[str]) -> None:
    for s in strings:
        if "\n" in s:
            raise ValueError(f"SMILES {s!r} holds a newline")
        _smiles_tokens(s)
    raise AssertionError("a string that cannot be tokenized was expected")


def _encode_ascii_smiles(text: str) -> tuple[np.ndarray, list[str]] | None:
    """_encode_chunk of ASCII SMILES lines, ~4x faster than findall: each multi-character token
    becomes one placeholder character, then every character is a token looked up in a table.
    None when there are too many distinct multi-character tokens for the placeholders."""
    multi: dict[str, str] = {}

    def placeholder(match):
        token = match.group()
        if token not in multi:
            if _PLACEHOLDER + len(multi) > 0x10FFFF:
                raise OverflowError
            multi[token] = chr(_PLACEHOLDER + len(multi))
        return multi[token]

    try:
        replaced = _MULTI_CHAR_PATTERN.sub(placeholder, text)
    except OverflowError:  # over a million distinct bracket atoms: let findall do it
        return None
    codes = np.frombuffer(replaced.encode("utf-32-le"), dtype=np.uint32)
    by_placeholder = {ord(mark): token for token, mark in multi.items()}
    table, lut = [], np.full(_PLACEHOLDER + len(multi), -1, dtype=np.int32)
    for code in np.flatnonzero(np.bincount(codes, minlength=len(lut))):
        token = by_placeholder.get(int(code), chr(code))
        if code < _PLACEHOLDER and token != "\n" and token not in _SINGLE_CHAR_TOKENS:
            _raise_untokenizable(text[:-1].split("\n"))  # a character no SMILES token covers
        lut[code] = len(table)
        table.append(token)
    return lut[codes], table


def _flat_ids(strings: Sequence[str], form: str, n_jobs: int = 1) -> list[tuple[np.ndarray, list[str]]]:
    chunks = [strings[i:i + _CHUNK] for i in range(0, len(strings), _CHUNK)]
    if n_jobs > 1 and len(chunks) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_jobs) as pool:
            return list(pool.map(_encode_chunk, chunks, [form] * len(chunks)))
    return [_encode_chunk(chunk, form) for chunk in chunks]


def _default_jobs(form: str, count: int) -> int:
    # SELFIES encoding runs ~0.4 ms per molecule in pure Python: worth the cores for big sets.
    # SMILES take ~2 us, less than sending the strings to a worker costs.
    if form == "smiles" or count <= 20_000:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def _pack(chunks, vocab: dict[str, int], max_len: int | None, bos: bool = True, eos: bool = True):
    """Scatter flat chunk ids into one padded array.

    Returns (tokens (M, L) uint8 / int16 / int32, kept (M,) int64 row indices of the input, L);
    strings that failed to encode or are longer than max_len (tokens + BOS + EOS) are left out.
    """
    extra = int(bos) + int(eos)
    remapped, lengths, failed = [], [], []
    for ids, table in chunks:
        lut = np.array([_NEWLINE if t == "\n" else _FAILED if t == "<failed>" else vocab.get(t, SmilesTokenizer.UNK)
                        for t in table], dtype=np.int32)
        flat = lut[ids] if len(ids) else ids
        ends = np.flatnonzero(flat == _NEWLINE)
        starts = np.concatenate([[0], ends[:-1] + 1])
        row_of = np.repeat(np.arange(len(ends)), ends - starts + 1)
        failed.append(np.bincount(row_of[flat == _FAILED], minlength=len(ends)) > 0)
        remapped.append((flat.astype(np.int16 if lut.max(initial=0) < 32768 else np.int32), starts, ends))
        lengths.append(ends - starts)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    failed = np.concatenate(failed) if failed else np.zeros(0, bool)
    if max_len is None:
        ok = ~failed
        max_len = int(lengths[ok].max()) + extra if ok.any() else extra
    keep = ~failed & (lengths + extra <= max_len)
    dtype = _storage_dtype(len(vocab))
    out = np.zeros((int(keep.sum()), max_len), dtype=dtype)
    new_row = np.cumsum(keep) - 1  # output row of each kept input row
    offset = 0
    for flat, starts, ends in remapped:
        row_of = np.repeat(np.arange(len(ends)), ends - starts + 1)
        rows = offset + row_of
        token = (flat >= 0) & keep[rows]
        columns = np.arange(len(flat)) - starts[row_of] + int(bos)
        out[new_row[rows[token]], columns[token]] = flat[token]
        chunk_rows = offset + np.arange(len(ends))
        kept_rows = chunk_rows[keep[chunk_rows]]
        if bos:
            out[new_row[kept_rows], 0] = SmilesTokenizer.BOS
        if eos:
            out[new_row[kept_rows], lengths[kept_rows] + int(bos)] = SmilesTokenizer.EOS
        offset += len(ends)
    return out, np.flatnonzero(keep), max_len


def _storage_dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32768 else np.int32


class SmilesTokenizer:
    """SMILES (or SELFIES) tokens <-> ids; ids 0..3 are PAD, BOS, EOS, UNK, then `tokens[4:]` sorted.

    Input to tokenize / encode is always a SMILES string, output of decode always SMILES; with
    form="selfies" the tokens are the SELFIES symbols of the molecule.
    """

    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]

    def __init__(self, tokens: Iterable[str], form: str = "smiles"):
        self.form = _check_form(form)
        body = sorted(set(tokens) - set(self.specials))
        if any(not isinstance(t, str) or not t for t in body):
            raise ValueError("tokens must be non-empty strings")
        self.tokens: list[str] = list(self.specials) + body
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @classmethod
    def fit(cls, strings: Iterable[str], form: str = "smiles") -> "SmilesTokenizer":
        """The tokens of every string (SMILES), sorted: deterministic for a given set of strings."""
        _check_form(form)
        strings = _check_strings("strings", strings)
        vocab = set()
        for ids, table in _flat_ids(strings, form, _default_jobs(form, len(strings))):
            vocab.update(t for t in table if t not in ("\n", "<failed>"))
        return cls(vocab, form)

    @classmethod
    def moses(cls, form: str = "smiles") -> "SmilesTokenizer":
        """The tokenizer fitted on the whole MOSES train file (cached per process and on disk)."""
        return _moses_encoded("train", _check_form(form))["tokenizer"]

    def tokenize(self, s: str) -> list[str]:
        """SMILES s as tokens: SMILES_REGEX pieces ("".join(tokens) == s) or SELFIES symbols."""
        if not isinstance(s, str):
            raise TypeError(f"s must be a SMILES str, got {type(s).__name__}")
        if self.form == "smiles":
            return _smiles_tokens(s)
        sf = _import_selfies()
        try:
            return list(sf.split_selfies(sf.encoder(s)))
        except Exception as error:
            raise ValueError(f"cannot encode SMILES {s!r} as SELFIES: {error}") from None

    def encode(self, s: str, bos: bool = True, eos: bool = True) -> list[int]:
        """Token ids of SMILES s, [BOS] + tokens + [EOS]; a token not in the vocabulary is UNK."""
        ids = [self._ids.get(t, self.UNK) for t in self.tokenize(s)]
        return ([self.BOS] if bos else []) + ids + ([self.EOS] if eos else [])

    def encode_batch(self, strings: Sequence[str], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Many SMILES at once, vectorised: (tokens (M, L) uint8/int16 [BOS ... EOS PAD ...], kept (M,)).

        L is max_len (None: the longest + 2); strings longer than that, or that SELFIES cannot
        encode, are left out; kept gives the input index of each row.
        """
        strings = _check_strings("strings", strings)
        chunks = _flat_ids(strings, self.form, _default_jobs(self.form, len(strings)))
        tokens, kept, _ = _pack(chunks, self._ids, max_len)
        return tokens, kept

    def decode(self, ids: Iterable[int]) -> str:
        """SMILES of token ids: stops at EOS, skips PAD and BOS (UNK reads "<unk>", never valid).
        A SELFIES form decodes its symbols back to SMILES ("" when that fails)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        pieces = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} out of range for vocab_size {len(self.tokens)}")
            if i == self.EOS:
                break
            if i not in (self.PAD, self.BOS):
                pieces.append(self.tokens[i])
        text = "".join(pieces)
        if self.form == "smiles":
            return text
        sf = _import_selfies()
        try:
            return sf.decoder(text) or ""
        except Exception:
            return ""

    def decode_batch(self, tokens) -> list[str]:
        """decode() of every row of a (B, L) array or tensor."""
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.detach().cpu().numpy()
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape (batch, length), got {tokens.shape}")
        if self.form == "selfies" or not tokens.size:
            return [self.decode(row) for row in tokens.tolist()]
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"tokens must hold integer ids, got dtype {tokens.dtype}")
        if tokens.min() < 0 or tokens.max() >= len(self.tokens):
            bad = tokens[(tokens < 0) | (tokens >= len(self.tokens))][0]
            raise ValueError(f"token id {int(bad)} out of range for vocab_size {len(self.tokens)}")
        return [text for start in range(0, len(tokens), _CHUNK * 4)
                for text in self._decode_rows(tokens[start:start + _CHUNK * 4])]

    def _decode_rows(self, tokens: np.ndarray) -> list[str]:
        """Vectorised decode() of SMILES rows (a million in seconds): ids from the first EOS on
        become PAD, each id becomes its token's UTF-8 bytes (specials none, UNK "<unk>") and a
        newline closes every row; the bytes are split back into strings."""
        pieces = [b"", b"", b"", b"<unk>"] + [t.encode() for t in self.tokens[len(self.specials):]] + [b"\n"]
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        table = np.zeros((len(pieces), max(lengths)), dtype=np.uint8)  # (vocab + 1, longest token)
        for i, piece in enumerate(pieces):
            table[i, :len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        before_eos = np.cumsum(tokens == self.EOS, axis=1) == 0
        ids = np.where(before_eos, tokens, self.PAD).astype(np.int64)
        ids = np.concatenate([ids, np.full((len(ids), 1), len(pieces) - 1)], axis=1).ravel()  # (B * (L + 1),)
        counts = lengths[ids]
        which = np.repeat(ids, counts)  # one entry per output byte
        starts = np.cumsum(counts) - counts
        offset = np.arange(len(which)) - np.repeat(starts, counts)
        return table[which, offset].tobytes().decode("utf-8").split("\n")[:-1]

    def to_json(self) -> str:
        return json.dumps({"type": "smiles", "form": self.form, "tokens": self.tokens[len(self.specials):]})

    @classmethod
    def from_json(cls, text: str) -> "SmilesTokenizer":
        if not isinstance(text, str):
            raise TypeError(f"text must be a str (SmilesTokenizer.to_json()), got {type(text).__name__}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"text is not a SmilesTokenizer JSON: {error}") from None
        if not isinstance(data, dict) or data.get("type") != "smiles" or not isinstance(data.get("tokens"), list):
            raise ValueError("text is not a SmilesTokenizer JSON (expected {'type': 'smiles', 'form', 'tokens'})")
        return cls(data["tokens"], data.get("form", "smiles"))

    def __eq__(self, other) -> bool:
        return isinstance(other, SmilesTokenizer) and self.form == other.form and self.tokens == other.tokens

    def __hash__(self):
        return hash((self.form, tuple(self.tokens)))

    def __repr__(self) -> str:
        return f"SmilesTokenizer(form={self.form!r}, vocab_size={self.vocab_size})"


def _check_strings(name: str, strings) -> list[str]:
    if isinstance(strings, str):
        raise TypeError(f"{name} must be a list of SMILES strings, got one str")
    strings = list(strings)
    for i, s in enumerate(strings):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a SMILES str, got {type(s).__name__}")
    return strings


# -- the MOSES files -------------------------------------------------------------------------
def moses_data_dir() -> Path:
    """The molsets wheel's moses/dataset/data folder, found without importing moses."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the MOSES data ships in the molsets wheel, which is not installed: {_CHEM_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "data"
    if not (folder / "train.csv.gz").is_file():
        raise ImportError(f"the installed moses package has no dataset/data/train.csv.gz at {folder}; "
                          f"reinstall it: {_CHEM_HINT}")
    return folder


_MOSES_SMILES: dict[str, list[str]] = {}


def load_moses_smiles(split: str) -> list[str]:
    """The SMILES of one MOSES file: "train" (the whole file, val included), "test" or
    "test_scaffolds". Cached per process; do not modify the returned list."""
    check_split(split, _MOSES_FILES)
    if split not in _MOSES_SMILES:
        path = moses_data_dir() / f"{split}.csv.gz"
        with gzip.open(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            column = header.index("SMILES") if "SMILES" in header else 0
            split_column = header.index("SPLIT") if "SPLIT" in header else None
            if split_column is None:
                smiles = [row[column] for row in reader]
            else:  # some molsets versions ship one file with a SPLIT column
                smiles = [row[column] for row in reader if row[split_column] == split]
        _MOSES_SMILES[split] = smiles
    return _MOSES_SMILES[split]


def _moses_split_rows(split: str) -> np.ndarray:
    """Row indices into the MOSES file of a split (train and val come from the train file)."""
    if split in ("test", "test_scaffolds"):
        return np.arange(len(load_moses_smiles(split)))
    count = len(load_moses_smiles("train"))
    order = np.random.default_rng(_MOSES_VAL_SEED).permutation(count)
    return np.sort(order[:MOSES_VAL_SIZE] if split == "val" else order[MOSES_VAL_SIZE:])


def _moses_version_key(form: str) -> str:
    path = moses_data_dir() / "train.csv.gz"
    stat = path.stat()
    key = f"{_CACHE_FORMAT}:{stat.st_size}:{int(stat.st_mtime)}:{form}:{SMILES_REGEX}"
    if form == "selfies":
        key += ":" + _import_selfies().__version__
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _moses_cache_path(file: str, form: str) -> Path:
    return cache_dir() / f"moses-{file}-{form}-{_moses_version_key(form)}.npz"


_MOSES_ENCODED: dict[tuple[str, str], dict] = {}


def _moses_encoded(file: str, form: str) -> dict:
    """{"tokenizer", "tokens" (M, L), "kept" (M,) rows of the file, "max_len"} for one MOSES file,
    encoded with SmilesTokenizer.moses(form); from memory, else from disk, else computed."""
    if (file, form) in _MOSES_ENCODED:
        return _MOSES_ENCODED[(file, form)]
    smiles = load_moses_smiles(file)
    path = _moses_cache_path(file, form)
    result = None
    if path.is_file():
        try:
            with np.load(path) as data:
                result = {"tokenizer": SmilesTokenizer.from_json(str(data["tokenizer"])),
                          "tokens": data["tokens"], "kept": data["kept"], "max_len": int(data["max_len"])}
        except Exception:  # a torn or stale cache file is recomputed
            result = None
    if result is None:
        chunks = _flat_ids(smiles, form, _default_jobs(form, len(smiles)))
        if file == "train":
            vocab = set()
            for _, table in chunks:
                vocab.update(t for t in table if t not in ("\n", "<failed>"))
            tokenizer, max_len = SmilesTokenizer(vocab, form), None
        else:
            train = _moses_encoded("train", form)
            tokenizer, max_len = train["tokenizer"], train["max_len"]
        tokens, kept, max_len = _pack(chunks, tokenizer._ids, max_len)
        result = {"tokenizer": tokenizer, "tokens": tokens, "kept": kept, "max_len": max_len}
        _save_npz(path, tokenizer=np.array(tokenizer.to_json()), tokens=tokens, kept=kept,
                  max_len=np.array(max_len))
    _MOSES_ENCODED[(file, form)] = result
    return result


def _moses_encoding_is_cheap(file: str, form: str) -> bool:
    """Whether _moses_encoded(file, form) takes seconds, not minutes (SELFIES, not cached yet)."""
    return (file, form) in _MOSES_ENCODED or form == "smiles" or \
        _moses_cache_path(file, form).is_file()


def _save_npz(path: Path, **arrays) -> None:
    """Write an uncompressed .npz atomically; a cache that cannot be written only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(f"could not write the cache file {path}: {error}", stacklevel=3)


# -- datasets --------------------------------------------------------------------------------
def _chem():
    from genkernels import chem

    return chem


def _property_rows(smiles: Sequence[str]) -> np.ndarray:
    """(N, 3) float32 [qed, logp, sa] of chem.mol_properties; NaN rows for invalid molecules."""
    chem = _chem()
    values = chem.mol_properties(list(smiles))
    return np.stack([np.asarray(values[name], dtype=np.float32) for name in chem.PROPERTY_NAMES], axis=1)


class SmilesDataset(Dataset):
    """Token sequences of molecules: item i is an int64 (max_len,) [BOS tokens EOS PAD ...], or
    (tokens, float32 (3,) [qed, logp, sa]) when the dataset has properties.

    Tokens are stored once as a compact (N, max_len) uint8 (vocab <= 256) / int16 tensor. tokenizer
    None fits one on `smiles`; max_len None is the longest (tokens + BOS + EOS). Strings longer than
    max_len (or that SELFIES cannot encode) are dropped; `.dropped` counts every string left out
    (also invalid molecules when properties are computed). properties=True computes RDKit
    properties with genkernels.chem.mol_properties (slow: use with_properties(max_items=...) on
    big sets).
    """

    kind = "smiles"

    def __init__(self, smiles: Sequence[str], *, tokenizer: SmilesTokenizer | None = None,
                 max_len: int | None = None, properties: bool = False, source: str = "", split: str = ""):
        smiles = _check_strings("smiles", smiles)
        if not smiles:
            raise ValueError("smiles must hold at least one SMILES string, got an empty list")
        if tokenizer is not None and not isinstance(tokenizer, SmilesTokenizer):
            raise TypeError(f"tokenizer must be a SmilesTokenizer or None, got {type(tokenizer).__name__}")
        _check_max_len(max_len)
        tokenizer = SmilesTokenizer.fit(smiles) if tokenizer is None else tokenizer
        tokens, kept = tokenizer.encode_batch(smiles, max_len)
        self._set(smiles=[smiles[i] for i in kept], tokens=tokens, tokenizer=tokenizer,
                  max_len=tokens.shape[1] if max_len is None else max_len, dropped=len(smiles) - len(kept),
                  source=source, split=split)
        if properties:
            self._attach_properties(_property_rows(self.smiles))

    def _set(self, *, smiles, tokens, tokenizer, max_len, dropped, source, split, properties=None) -> None:
        if not len(smiles):
            raise ValueError(f"no molecule of {source or 'the data'} (split {split!r}) fits: "
                             f"{dropped} dropped (longer than max_len={max_len} or not encodable)")
        self.smiles, self.tokenizer, self.max_len = list(smiles), tokenizer, int(max_len)
        self.tokens = torch.from_numpy(np.ascontiguousarray(tokens))  # (N, max_len) uint8 / int16
        self.dropped, self.source, self.split = int(dropped), source, split
        self.properties, self._properties_tensor = None, None
        if properties is not None:
            self._attach_properties(properties)

    def _attach_properties(self, rows: np.ndarray) -> None:
        """Keep the rows whose three properties are finite; invalid molecules are dropped."""
        valid = np.isfinite(rows).all(axis=1)
        if not valid.all():
            index = np.flatnonzero(valid)
            self.smiles = [self.smiles[i] for i in index]
            self.tokens = self.tokens[torch.from_numpy(index)]
            self.dropped += int((~valid).sum())
        if not self.smiles:
            raise ValueError(f"no molecule of {self.source or 'the data'} has valid properties")
        self.properties = np.ascontiguousarray(rows[valid], dtype=np.float32)  # (N, 3) qed, logp, sa
        self._properties_tensor = torch.from_numpy(self.properties)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} molecules")
        tokens = self.tokens[index].long()  # (max_len,)
        if self._properties_tensor is None:
            return tokens
        return tokens, self._properties_tensor[index]  # (max_len,), (3,)

    def _subset_rows(self, max_items: int | None, seed: int) -> np.ndarray:
        _check_max_items(max_items)
        _check_seed(seed)
        if max_items is None or max_items >= len(self):
            return np.arange(len(self))
        return np.sort(np.random.default_rng(seed).permutation(len(self))[:max_items])

    def _subset(self, rows: np.ndarray, properties: np.ndarray | None) -> "SmilesDataset":
        subset = SmilesDataset.__new__(SmilesDataset)
        subset._set(smiles=[self.smiles[i] for i in rows], tokens=self.tokens.numpy()[rows],
                    tokenizer=self.tokenizer, max_len=self.max_len, dropped=self.dropped,
                    source=self.source, split=self.split, properties=properties)
        return subset

    def with_properties(self, max_items: int | None = None, seed: int = 0) -> "SmilesDataset":
        """The same molecules (all, or a seeded random subset of max_items, kept in order) with
        `.properties` (N, 3) float32 [qed, logp, sa] from genkernels.chem.mol_properties; molecules
        RDKit cannot parse are dropped. Needs RDKit; about 1-2 ms per molecule."""
        rows = self._subset_rows(max_items, seed)
        if self.properties is not None:
            return self._subset(rows, self.properties[rows])
        return self._subset(rows, _property_rows([self.smiles[i] for i in rows]))

    def __repr__(self) -> str:
        extra = "" if self.properties is None else ", properties"
        return (f"{type(self).__name__}({self.source!r}, split={self.split!r}, molecules={len(self)}, "
                f"max_len={self.max_len}, tokenizer={self.tokenizer!r}, dropped={self.dropped}{extra})")


def _check_max_len(max_len) -> None:
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 3):
        raise ValueError(f"max_len must be an int >= 3 (BOS, one token, EOS) or None, got {max_len!r}")


def _check_max_items(max_items) -> None:
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items <= 0):
        raise ValueError(f"max_items must be a positive int or None, got {max_items!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


class MosesDataset(SmilesDataset):
    """A MOSES split ("train", "val", "test", "test_scaffolds"; see the module docstring).

    max_items takes a seeded random subset (kept in file order). tokenizer None is
    SmilesTokenizer.moses(form) and max_len the MOSES train maximum, shared by every split; another
    tokenizer (unless it equals the MOSES one; its form wins over `form`) encodes the chosen
    molecules itself (max_len None: their longest). properties=True
    computes properties for every molecule of the split (cached on disk; slow for big splits:
    prefer with_properties(max_items=...)).
    """

    def __init__(self, split: str = "train", *, max_items: int | None = None, seed: int = 0,
                 form: str = "smiles", properties: bool = False, tokenizer: SmilesTokenizer | None = None,
                 max_len: int | None = None):
        check_split(split, MOSES_SPLITS)
        _check_form(form)
        _check_max_items(max_items)
        _check_seed(seed)
        _check_max_len(max_len)
        if tokenizer is not None and not isinstance(tokenizer, SmilesTokenizer):
            raise TypeError(f"tokenizer must be a SmilesTokenizer or None, got {type(tokenizer).__name__}")
        self.form, self.seed, self.max_items = form if tokenizer is None else tokenizer.form, seed, max_items
        file = "train" if split in ("train", "val") else split
        smiles = load_moses_smiles(file)
        rows = _moses_split_rows(split)
        if max_items is not None and max_items < len(rows):
            rows = np.sort(np.random.default_rng(seed).permutation(rows)[:max_items])
        if tokenizer is None:
            encoded = _moses_encoded(file, self.form)
        else:  # a model's saved tokenizer is usually the MOSES one: then reuse its encoding and max_len
            encoded = _moses_encoded(file, self.form) if _moses_encoding_is_cheap(file, self.form) else None
            encoded = encoded if encoded is not None and encoded["tokenizer"] == tokenizer else None
        if encoded is not None and (max_len is None or max_len == encoded["max_len"]):
            kept = encoded["kept"]
            where = np.minimum(np.searchsorted(kept, rows), len(kept) - 1)
            found = kept[where] == rows
            tokens, rows_kept = encoded["tokens"][where[found]], rows[found]
            tokenizer, max_len = encoded["tokenizer"], encoded["max_len"]
        else:
            tokenizer = SmilesTokenizer.moses(form) if tokenizer is None else tokenizer
            tokens, kept = tokenizer.encode_batch([smiles[i] for i in rows], max_len)
            rows_kept, max_len = rows[kept], tokens.shape[1]
        self._set(smiles=[smiles[i] for i in rows_kept], tokens=tokens, tokenizer=tokenizer, max_len=max_len,
                  dropped=len(rows) - len(rows_kept), source="moses", split=split)
        self._rows = rows_kept  # rows of the MOSES file: the key of the properties cache
        if properties:
            values = self._cached_properties(np.arange(len(self)))
            self._rows = self._rows[np.isfinite(values).all(axis=1)]  # as _attach_properties drops
            self._attach_properties(values)

    def _cached_properties(self, rows: np.ndarray) -> np.ndarray:
        """Properties (len(rows), 3) of the given dataset rows, from the disk cache when there."""
        file_rows = np.ascontiguousarray(self._rows[rows], dtype=np.int64)
        digest = hashlib.sha1(file_rows.tobytes()).hexdigest()[:12]
        file = "train" if self.split in ("train", "val") else self.split
        path = cache_dir() / f"moses-properties-{self.split}-n{len(rows)}-{file}-{digest}.npy"
        if path.is_file():
            try:
                values = np.load(path)
                if values.shape == (len(rows), 3):
                    return values
            except (OSError, ValueError):
                pass
        values = _property_rows([self.smiles[i] for i in rows])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(temporary, values)
            os.replace(temporary, path)
        except OSError as error:
            warnings.warn(f"could not write the cache file {path}: {error}", stacklevel=2)
        return values

    def with_properties(self, max_items: int | None = None, seed: int = 0) -> SmilesDataset:
        rows = self._subset_rows(max_items, seed)
        if self.properties is not None:
            return self._subset(rows, self.properties[rows])
        return self._subset(rows, self._cached_properties(rows))

    with_properties.__doc__ = (SmilesDataset.with_properties.__doc__ +
                               "\n        Cached on disk, keyed by the MOSES rows chosen (split, seed, max_items).")


# -- user files ------------------------------------------------------------------------------
def read_smiles_file(path: str | os.PathLike) -> list[str]:
    """SMILES from a file: .csv (the column named SMILES / smiles, else the first), else one
    molecule per non-empty line, its first whitespace-separated field (.smi / .smiles / .txt; a
    first line "smiles" / "SMILES" is a header). With RDKit installed every molecule is parsed;
    unparseable ones raise ValueError "path: line N: cannot parse SMILES '...'" (the first 10, and
    the count). An empty file raises ValueError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"SMILES file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"SMILES file {str(path)!r} is not UTF-8 ({error.reason} at byte {error.start})") from None
    entries: list[tuple[int, str]] = []  # (line number, SMILES)
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        numbered = [(n, row) for n, row in enumerate(rows, 1) if any(cell.strip() for cell in row)]
        if numbered:
            header = [cell.strip() for cell in numbered[0][1]]
            column = next((header.index(name) for name in ("SMILES", "smiles") if name in header), None)
            if column is None:
                column = next((i for i, cell in enumerate(header) if cell.lower() == "smiles"), 0)
            for n, row in numbered[1:]:
                entries.append((n, row[column].strip() if column < len(row) else ""))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if fields:
                entries.append((n, fields[0]))
        if entries and entries[0][1].lower() == "smiles":
            entries = entries[1:]
    if not entries:
        raise ValueError(f"SMILES file {str(path)!r} holds no molecules")
    bad = [(n, s) for n, s in entries if not s]
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        Chem = None
    if Chem is not None:
        RDLogger.DisableLog("rdApp.*")
        try:
            bad = [(n, s) for n, s in entries if not s or Chem.MolFromSmiles(s) is None]
        finally:
            RDLogger.EnableLog("rdApp.*")
    if bad:
        lines = "\n".join(f"{path}: line {n}: cannot parse SMILES {s!r}" for n, s in bad[:_MAX_REPORTED])
        more = f"\n... and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else ""
        raise ValueError(f"{lines}{more}\n{len(bad)} of {len(entries)} SMILES in {path} cannot be parsed")
    return [s for _, s in entries]


class SmilesFileDataset(SmilesDataset):
    """A user's SMILES file (see read_smiles_file), split by position: every 20th molecule to val
    and to test (90 / 5 / 5), or "all". tokenizer None fits one on all the file's molecules, and
    max_len None is the longest of the whole file, so every split shares them."""

    def __init__(self, path: str | os.PathLike, split: str = "train", *, tokenizer: SmilesTokenizer | None = None,
                 max_len: int | None = None, properties: bool = False, form: str = "smiles"):
        check_split(split, FILE_SPLITS)
        _check_form(form)
        _check_max_len(max_len)
        if tokenizer is not None and not isinstance(tokenizer, SmilesTokenizer):
            raise TypeError(f"tokenizer must be a SmilesTokenizer or None, got {type(tokenizer).__name__}")
        smiles = read_smiles_file(path)
        tokenizer = SmilesTokenizer.fit(smiles, form) if tokenizer is None else tokenizer
        tokens, kept = tokenizer.encode_batch(smiles, max_len)  # the whole file: one shared max_len
        max_len = tokens.shape[1] if max_len is None else max_len
        chosen = np.asarray(split_indices(len(smiles), split), dtype=np.int64)
        in_split = np.isin(kept, chosen)
        self._set(smiles=[smiles[i] for i in kept[in_split]], tokens=tokens[in_split], tokenizer=tokenizer,
                  max_len=max_len, dropped=len(chosen) - int(in_split.sum()), source=str(path), split=split)
        if properties:
            self._attach_properties(_property_rows(self.smiles))


__all__ = [
    "SMILES_REGEX", "SMILES_EXTENSIONS", "SMILES_FORMS", "MOSES_SPLITS", "SmilesTokenizer",
    "moses_data_dir", "load_moses_smiles", "SmilesDataset", "MosesDataset", "read_smiles_file",
    "SmilesFileDataset",
]

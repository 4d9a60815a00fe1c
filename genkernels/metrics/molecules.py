"""MOSES metrics for generated molecules (Polykovskiy et al. 2020, "Molecular Sets (MOSES)").

Our own code, written to reproduce molsets 0.3.1 `moses.metrics.get_all_metrics` number for number
(the `moses` package itself cannot be imported here). As there, `valid` is measured on the raw
generated list; every other metric uses the valid molecules only, as RDKit canonical SMILES,
duplicates kept:

valid          share of generated strings RDKit parses and sanitizes (empty = invalid)
unique@k       distinct canonical SMILES among the first k VALID molecules / that count (MOSES
               drops the invalid ones first; with fewer than k valid it uses them all and warns)
novelty        share of the distinct valid molecules whose canonical SMILES is not a train string
               (MOSES compares with the train file's strings as stored, not re-canonicalized)
fcd            Frechet ChemNet Distance (Preuer et al. 2018) via fcd_torch, test stats mu/sigma
snn            mean over generated molecules of the max Tanimoto similarity to a reference
               molecule, Morgan fingerprints radius 2, 1024 bits (0..1, higher = closer)
frag           cosine similarity of BRICS fragment counts (generated vs reference)
scaf           cosine similarity of Bemis-Murcko scaffold counts, scaffolds with >= 2 rings only
intdiv         1 - mean_i mean_j T(i, j)  over all ordered pairs, self-pairs included (IntDiv1)
intdiv2        1 - mean_i sqrt(mean_j T(i, j)^2)  (IntDiv2, MOSES's p = 2)
filters        share passing MOSES's rules: MCF + PAINS SMARTS (moses/metrics/mcf.csv,
               wehi_pains.csv, matched on the molecule with explicit H), atoms only
               C N S O F Cl Br H, no formal charge, no ring of 8 or more atoms
logp sa qed weight   Wasserstein-1 distance between the property's distribution over the
               generated molecules and over the test set (MOSES >= 2020; the first README used a
               Frechet distance)

A set with no valid molecule gives NaN for everything but `valid`, as does a cosine similarity
with an empty count vector (MOSES's behaviour).
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections import Counter
from functools import lru_cache
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from genkernels.chem import INSTALL_HINT, _check_smiles_list, _map, canonical_smiles, get_mol, require_rdkit

METRIC_KEYS = ("valid", "unique@1000", "unique@10000", "novelty", "fcd/test", "fcd/testsf",
               "snn/test", "snn/testsf", "frag/test", "frag/testsf", "scaf/test", "scaf/testsf",
               "intdiv", "intdiv2", "filters", "logp", "sa", "qed", "weight")
_PROPERTIES = ("logp", "sa", "qed", "weight")
_FP_BITS = 1024
_ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})

# --------------------------------------------------------------------------------------------
# Published results. Source: README.md of github.com/molecularsets/moses at 7b8f83b (2020-10-28),
# the "Results" table (mean of 3 runs; the README gives "mean±std", we keep the mean). Those
# numbers use the metric definitions above and the current splits (test = 176,074 molecules).
_PUBLISHED_COLUMNS = ("valid", "unique@1000", "unique@10000", "fcd/test", "fcd/testsf", "snn/test",
                      "snn/testsf", "frag/test", "frag/testsf", "scaf/test", "scaf/testsf", "intdiv",
                      "intdiv2", "filters", "novelty")
_PUBLISHED_ROWS = {
    "Train": (1.0, 1.0, 1.0, 0.008, 0.4755, 0.6419, 0.5859, 1.0, 0.9986, 0.9907, 0.0, 0.8567, 0.8508, 1.0, 1.0),
    "HMM": (0.076, 0.623, 0.5671, 24.4661, 25.4312, 0.3876, 0.3795, 0.5754, 0.5681, 0.2065, 0.049, 0.8466,
            0.8104, 0.9024, 0.9994),
    "NGram": (0.2376, 0.974, 0.9217, 5.5069, 6.2306, 0.5209, 0.4997, 0.9846, 0.9815, 0.5302, 0.0977, 0.8738,
              0.8644, 0.9582, 0.9694),
    "Combinatorial": (1.0, 0.9983, 0.9909, 4.2375, 4.5113, 0.4514, 0.4388, 0.9912, 0.9904, 0.4445, 0.0865,
                      0.8732, 0.8666, 0.9557, 0.9878),
    "CharRNN": (0.9748, 1.0, 0.9994, 0.0732, 0.5204, 0.6015, 0.5649, 0.9998, 0.9983, 0.9242, 0.1101, 0.8562,
                0.8503, 0.9943, 0.8419),
    "AAE": (0.9368, 1.0, 0.9973, 0.5555, 1.0572, 0.6081, 0.5677, 0.991, 0.9905, 0.9022, 0.0789, 0.8557, 0.8499,
            0.996, 0.7931),
    "VAE": (0.9767, 1.0, 0.9984, 0.099, 0.567, 0.6257, 0.5783, 0.9994, 0.9984, 0.9386, 0.0588, 0.8558, 0.8498,
            0.997, 0.6949),
    "JTN-VAE": (1.0, 1.0, 0.9996, 0.3954, 0.9382, 0.5477, 0.5194, 0.9965, 0.9947, 0.8964, 0.1009, 0.8551,
                0.8493, 0.976, 0.9143),
    "LatentGAN": (0.8966, 1.0, 0.9968, 0.2968, 0.8281, 0.5371, 0.5132, 0.9986, 0.9972, 0.8867, 0.1072, 0.8565,
                  0.8505, 0.9735, 0.9498),
}
PUBLISHED_MOSES: dict[str, dict[str, float]] = {
    model: dict(zip(_PUBLISHED_COLUMNS, values)) for model, values in _PUBLISHED_ROWS.items()}

# The first README table (molecularsets/moses README.md from 5011de2, 2018-11-28, until cd1e36a,
# 2019-02-12; arXiv v1): single runs, an older split (10k test molecules) and older metric code,
# so not comparable with numbers computed here. Kept because issue 15 quotes it.
_PUBLISHED_2018_COLUMNS = ("valid", "unique@1000", "unique@10000", "fcd/test", "fcd/testsf", "snn/test",
                           "snn/testsf", "frag/test", "frag/testsf", "scaf/test", "scaf/testsf", "intdiv",
                           "filters")
_PUBLISHED_2018_ROWS = {
    "CharRNN": (0.9598, 1.0, 0.9993, 0.3233, 0.8355, 0.4606, 0.4492, 0.9977, 0.9962, 0.7964, 0.1281, 0.8561,
                0.9920),
    "VAE": (0.9528, 1.0, 0.9992, 0.2540, 0.6959, 0.4684, 0.4547, 0.9978, 0.9963, 0.8277, 0.0925, 0.8548, 0.9925),
    "AAE": (0.9341, 1.0, 1.0, 1.3511, 1.8587, 0.4191, 0.4113, 0.9865, 0.9852, 0.6637, 0.1538, 0.8531, 0.9759),
    "ORGAN": (0.8731, 0.9910, 0.9260, 1.5748, 2.4306, 0.4745, 0.4593, 0.9897, 0.9883, 0.7843, 0.0632, 0.8526,
              0.9934),
    "JTN-VAE": (1.0, 0.9980, 0.9972, 4.3769, 4.6299, 0.3909, 0.3902, 0.9679, 0.9699, 0.3868, 0.1163, 0.8495,
                0.9566),
}
PUBLISHED_MOSES_2018: dict[str, dict[str, float]] = {
    model: dict(zip(_PUBLISHED_2018_COLUMNS, values)) for model, values in _PUBLISHED_2018_ROWS.items()}


# --------------------------------------------------------------------------------------------
# Files of the molsets wheel, found without importing `moses` (its __init__ needs pomegranate).
def _moses_package_dir() -> str:
    from genkernels.data.smiles import moses_data_dir  # <moses>/dataset/data
    return str(moses_data_dir().parent.parent)


def _require_fcd():
    try:
        import fcd_torch
    except ImportError as error:
        raise ImportError(f"the FCD metric needs fcd_torch: {INSTALL_HINT}") from error
    return fcd_torch


@lru_cache(maxsize=1)
def _filter_patterns() -> tuple:
    """MCF + PAINS SMARTS from the molsets wheel, compiled (cached per process)."""
    Chem = require_rdkit()
    directory = os.path.join(_moses_package_dir(), "metrics")
    smarts = []
    with open(os.path.join(directory, "mcf.csv"), newline="") as handle:
        rows = csv.reader(handle)
        column = next(rows).index("smarts")
        smarts += [row[column] for row in rows if row]
    with open(os.path.join(directory, "wehi_pains.csv"), newline="") as handle:  # no header: smarts, name
        smarts += [row[0] for row in csv.reader(handle) if row]
    patterns = tuple(Chem.MolFromSmarts(s.strip()) for s in smarts)
    if any(p is None for p in patterns):
        raise ValueError("a MCF/PAINS SMARTS pattern of the molsets wheel failed to parse")
    return patterns


@lru_cache(maxsize=2)
def precomputed_statistics(split: str = "test") -> dict:
    """MOSES's precomputed reference statistics of "test" or "test_scaffolds" (test_stats.npz).

    {"fcd": {"mu", "sigma"}, "snn": {"fps": uint8 (N, 1024)}, "frag": Counter, "scaf": Counter,
     "logp" / "sa" / "qed" / "weight": float64 (N,)}. The file is a pickle holding only numpy
    arrays, lists and collections.Counter (no moses classes), so numpy's allow_pickle is safe here.
    """
    if split not in ("test", "test_scaffolds"):
        raise ValueError(f"split must be 'test' or 'test_scaffolds', got {split!r}")
    path = os.path.join(_moses_package_dir(), "dataset", "data", f"{split}_stats.npz")
    with warnings.catch_warnings():  # numpy 2 warns about the numpy.core path inside the pickle
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = np.load(path, allow_pickle=True)["stats"].item()
    return {"fcd": raw["FCD"], "snn": {"fps": raw["SNN"]["fps"]}, "frag": raw["Frag"]["frag"],
            "scaf": raw["Scaf"]["scaf"],
            **{name: np.asarray(raw[key]["values"], dtype=np.float64)
               for name, key in (("logp", "logP"), ("sa", "SA"), ("qed", "QED"), ("weight", "weight"))}}


# --------------------------------------------------------------------------------------------
# Per-molecule work. One parse per molecule; workers get strings (cheap to pickle), not Mols.
@lru_cache(maxsize=1)
def _morgan_generator():
    from rdkit.Chem import rdFingerprintGenerator
    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=_FP_BITS)


def _fingerprint(mol) -> np.ndarray:
    # same bits as MOSES's AllChem.GetMorganFingerprintAsBitVect(mol, 2, nBits=1024) (checked
    # against the fingerprints stored in test_stats.npz)
    return _morgan_generator().GetFingerprintAsNumPy(mol).astype(np.uint8)


def _fragments(mol) -> list[str]:
    Chem = require_rdkit()
    from rdkit.Chem import AllChem
    return Chem.MolToSmiles(AllChem.FragmentOnBRICSBonds(mol)).split(".")


def _scaffold(mol, min_rings: int = 2) -> Optional[str]:
    Chem = require_rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if smiles == "" or scaffold.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


def _passes_filters(mol) -> bool:
    """MOSES's mol_passes_filters with its default allowed atoms and isomericSmiles=False."""
    Chem = require_rdkit()
    ring_info = mol.GetRingInfo()
    if ring_info.NumRings() != 0 and any(len(ring) >= 8 for ring in ring_info.AtomRings()):
        return False
    if any(atom.GetFormalCharge() != 0 for atom in mol.GetAtoms()):
        return False
    if any(atom.GetSymbol() not in _ALLOWED_ATOMS for atom in mol.GetAtoms()):
        return False
    with_h = Chem.AddHs(mol)
    if any(with_h.HasSubstructMatch(pattern) for pattern in _filter_patterns()):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def _property_values(mol) -> tuple[float, float, float, float]:
    from rdkit.Chem import Crippen, Descriptors
    from rdkit.Chem.QED import qed
    from genkernels.chem import _load_sascorer
    return (Crippen.MolLogP(mol), float(_load_sascorer().calculateScore(mol)), qed(mol), Descriptors.MolWt(mol))


_FEATURES = ("fps", "frag", "scaf", "filters", "properties")


def _features_one(args: tuple[str, tuple[str, ...]]) -> Optional[dict]:
    smiles, wanted = args
    mol = get_mol(smiles)  # MOSES re-parses the canonical SMILES; a rare failure drops the molecule
    if mol is None:
        return None
    out: dict[str, Any] = {}
    if "fps" in wanted:
        out["fps"] = _fingerprint(mol)
    if "frag" in wanted:
        out["frag"] = _fragments(mol)
    if "scaf" in wanted:
        out["scaf"] = _scaffold(mol)
    if "filters" in wanted:
        out["filters"] = _passes_filters(mol)
    if "properties" in wanted:
        out["properties"] = _property_values(mol)
    return out


class _MoleculeSet:
    """Valid molecules as distinct canonical SMILES with multiplicities; features computed once per
    distinct molecule (exact: every MOSES statistic is a sum over molecules with duplicates)."""

    def __init__(self, canonical: Sequence[str], n_jobs: int = 1):
        counts = Counter(canonical)
        self.smiles = list(counts)
        self.counts = np.array([counts[s] for s in self.smiles], dtype=np.float64)
        self.n_jobs = n_jobs
        self._features: dict[str, list] = {}

    def __len__(self) -> int:
        return int(self.counts.sum())

    def features(self, *names: str) -> dict[str, list]:
        missing = tuple(n for n in names if n not in self._features)
        if missing:
            rows = _map(_features_one, [(s, missing) for s in self.smiles], self.n_jobs)
            for name in missing:
                self._features[name] = [None if row is None else row[name] for row in rows]
        return {name: self._features[name] for name in names}

    def smiles_with_duplicates(self) -> list[str]:
        return [s for s, c in zip(self.smiles, self.counts.astype(np.int64)) for _ in range(c)]

    def fingerprints(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (U, 1024) Morgan bits, float64 (U,) counts) of the molecules that re-parse."""
        fps = self.features("fps")["fps"]
        keep = [i for i, fp in enumerate(fps) if fp is not None]
        matrix = np.stack([fps[i] for i in keep]) if keep else np.zeros((0, _FP_BITS), np.uint8)
        return matrix, self.counts[keep]

    def counter(self, name: str) -> Counter:
        total: Counter = Counter()
        for value, count in zip(self.features(name)[name], self.counts):
            if value is None:
                continue
            for item in (value if isinstance(value, list) else [value]):
                total[item] += int(count)
        return total

    def property_values(self) -> dict[str, np.ndarray]:
        rows = self.features("properties")["properties"]
        keep = [i for i, row in enumerate(rows) if row is not None]
        table = np.array([rows[i] for i in keep], dtype=np.float64).reshape(-1, 4)
        repeats = self.counts[keep].astype(np.int64)
        return {name: np.repeat(table[:, j], repeats) for j, name in enumerate(_PROPERTIES)}


def _valid_canonical(smiles: Iterable[Any], n_jobs: int = 1) -> list[str]:
    return [s for s in _map(canonical_smiles, list(smiles), n_jobs) if s is not None]


def _as_set(name: str, smiles: Any, n_jobs: int) -> _MoleculeSet:
    if isinstance(smiles, _MoleculeSet):
        return smiles
    require_rdkit()
    return _MoleculeSet(_valid_canonical(_check_smiles_list(name, smiles), n_jobs), n_jobs)


# --------------------------------------------------------------------------------------------
# Similarity kernels.
def _shared_bits(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """|a & b| for every pair: (B, D) x (C, D) 0/1 int8 -> float32 (B, C), exact.

    On CPU an int8 matmul with int32 accumulation (torch._int_mm, VNNI) runs about 4x faster
    than float32; elsewhere, or when it is unavailable, a float32 matmul (counts <= D are exact).
    """
    if query.device.type == "cpu" and hasattr(torch, "_int_mm"):
        try:
            return torch._int_mm(query, reference.T.contiguous()).float()
        except RuntimeError:
            pass
    return query.float() @ reference.float().T


def tanimoto_aggregate(query: np.ndarray, reference: np.ndarray, *, agg: str = "max", p: int = 1,
                       reference_weights: Optional[np.ndarray] = None, chunk: int = 2048,
                       device: str = "cpu") -> np.ndarray:
    """For each query fingerprint, aggregate its Tanimoto similarity to every reference one.

    query (Q, D), reference (R, D): 0/1 arrays (any dtype). Tanimoto T = |a&b| / (|a| + |b| - |a&b|),
    1 for two empty fingerprints (as MOSES). agg "max": max_j T; agg "mean": (sum_j w_j T^p /
    sum_j w_j)^(1/p) with reference_weights w (default 1). Returns float64 (Q,).
    Works on (chunk, chunk) blocks so memory stays near 4 * chunk^2 bytes per temporary.
    """
    if agg not in ("max", "mean"):
        raise ValueError(f"agg must be 'max' or 'mean', got {agg!r}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    query_t = torch.as_tensor(np.asarray(query, dtype=np.int8), device=device)  # (Q, D)
    reference_t = torch.as_tensor(np.asarray(reference, dtype=np.int8), device=device)  # (R, D)
    if query_t.ndim != 2 or reference_t.ndim != 2 or query_t.shape[1] != reference_t.shape[1]:
        raise ValueError(f"query and reference must be (N, D) with the same D, got {tuple(query_t.shape)} "
                         f"and {tuple(reference_t.shape)}")
    if query_t.shape[0] == 0 or reference_t.shape[0] == 0:
        return np.full(query_t.shape[0], np.nan)
    weights = None
    if reference_weights is not None:
        weights = torch.as_tensor(np.asarray(reference_weights, np.float64), device=device)
    result = torch.full((query_t.shape[0],), -1.0 if agg == "max" else 0.0, dtype=torch.float64, device=device)
    query_bits = query_t.sum(1, dtype=torch.float32)  # (Q,)
    reference_bits = reference_t.sum(1, dtype=torch.float32)  # (R,)
    for start in range(0, reference_t.shape[0], chunk):
        ref = reference_t[start:start + chunk]  # (C, D)
        ref_bits = reference_bits[start:start + chunk]  # (C,)
        ref_empty = ref_bits == 0
        for q0 in range(0, query_t.shape[0], chunk):
            qry_bits = query_bits[q0:q0 + chunk, None]  # (B, 1)
            shared = _shared_bits(query_t[q0:q0 + chunk], ref)  # (B, C)
            union = torch.add(qry_bits, ref_bits).sub_(shared)  # (B, C)
            similarity = shared.div_(union.clamp_min_(0.5))  # 0/0 -> 0 here, fixed just below
            if ref_empty.any():
                similarity[(qry_bits == 0) & ref_empty] = 1.0
            if agg == "max":
                block = similarity.amax(1).double()
                result[q0:q0 + chunk] = torch.maximum(result[q0:q0 + chunk], block)
            else:
                if p != 1:
                    similarity.square_()
                w = weights[start:start + chunk] if weights is not None else None
                result[q0:q0 + chunk] += similarity.double() @ w if w is not None else similarity.sum(1).double()
    if agg == "mean":
        result /= float(weights.sum()) if weights is not None else float(reference_t.shape[0])
        if p != 1:
            result = result.sqrt()
    return result.cpu().numpy()


def _cos_similarity(reference: Counter, generated: Counter) -> float:
    """1 - cosine distance of two count dicts (missing keys = 0); NaN if either is empty (MOSES)."""
    if len(reference) == 0 or len(generated) == 0:
        return float("nan")
    keys = list(set(reference) | set(generated))
    ref = np.array([reference.get(k, 0) for k in keys], dtype=np.float64)
    gen = np.array([generated.get(k, 0) for k in keys], dtype=np.float64)
    return float(ref @ gen / (np.linalg.norm(ref) * np.linalg.norm(gen)))


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 distance between two 1-D empirical distributions (equal weights per sample):
    the integral of |F_u(x) - F_v(x)| dx, as scipy.stats.wasserstein_distance."""
    u = np.sort(np.asarray(u, dtype=np.float64))
    v = np.sort(np.asarray(v, dtype=np.float64))
    if u.size == 0 or v.size == 0:
        return float("nan")
    points = np.sort(np.concatenate([u, v]))
    deltas = np.diff(points)
    cdf_u = np.searchsorted(u, points[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, points[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * deltas))


# --------------------------------------------------------------------------------------------
# Single metrics. `generated` / `reference` are SMILES lists; invalid entries are dropped (as
# get_all_metrics does before these metrics), except where stated.
def fraction_valid(generated: Sequence[str], n_jobs: int = 1) -> float:
    """Share of strings RDKit parses and sanitizes (empty strings and None are invalid)."""
    generated = _check_smiles_list("generated", generated)
    if not generated:
        raise ValueError("generated is empty")
    require_rdkit()
    canonical = _map(canonical_smiles, generated, n_jobs)
    return 1.0 - canonical.count(None) / len(canonical)


def fraction_unique(generated: Sequence[str], k: Optional[int] = None, n_jobs: int = 1,
                    check_validity: bool = True) -> float:
    """Distinct canonical SMILES among the first k strings / that count (MOSES fraction_unique).

    Pass VALID molecules (moses_metrics passes the valid ones in generation order); an invalid one
    raises ValueError unless check_validity=False (then all invalid ones count as one "None").
    """
    generated = _check_smiles_list("generated", generated)
    if k is not None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int or None, got {k!r}")
        if len(generated) < k:
            warnings.warn(f"Can't compute unique@{k}: only {len(generated)} valid molecules; using them all")
        generated = generated[:k]
    if not generated:
        return float("nan")
    require_rdkit()
    canonical = set(_map(canonical_smiles, generated, n_jobs))
    if None in canonical and check_validity:
        raise ValueError("generated holds an invalid SMILES; unique@k is computed on valid molecules")
    return len(canonical) / len(generated)


def novelty(generated: Sequence[str], train: Optional[Iterable[str]] = None, n_jobs: int = 1) -> float:
    """Share of distinct valid generated molecules (canonical SMILES) not among the train strings."""
    gen = _as_set("generated", generated, n_jobs)
    if not gen.smiles:
        return float("nan")
    train_set = train if isinstance(train, (set, frozenset)) else set(_load_split("train") if train is None else train)
    return sum(1 for s in gen.smiles if s not in train_set) / len(gen.smiles)


def fcd(generated: Sequence[str], reference: Optional[Sequence[str]] = None, *, reference_stats=None,
        generated_stats=None, device: str = "cpu", n_jobs: int = 1, batch_size: int = 512) -> float:
    """Frechet ChemNet Distance between valid generated molecules and a reference set (or its
    precomputed {"mu", "sigma"}); fcd_torch's ChemNet, canonical SMILES in. NaN under 2 molecules.
    generated_stats: the generated set's {"mu", "sigma"} when already computed (then `generated`
    is not read)."""
    if (reference is None) == (reference_stats is None):
        raise ValueError("give exactly one of reference (SMILES) and reference_stats ({'mu', 'sigma'})")
    model = _fcd_model(device, n_jobs, batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fcd_torch warns (and returns {}) under 2 molecules
        if reference_stats is None:
            reference_stats = model.precalc(_check_smiles_list("reference", reference))
        if generated_stats is None:
            gen = generated.smiles_with_duplicates() if isinstance(generated, _MoleculeSet) else \
                _valid_canonical(_check_smiles_list("generated", generated), n_jobs)
            generated_stats = model.precalc(gen)
        if "mu" not in generated_stats or "mu" not in reference_stats:
            return float("nan")
        return float(model.metric(reference_stats, generated_stats))


def _fcd_model(device: str, n_jobs: int, batch_size: int):
    fcd_torch = _require_fcd()
    return fcd_torch.FCD(device=device, n_jobs=n_jobs, batch_size=batch_size)


def snn(generated: Sequence[str], reference: Optional[Sequence[str]] = None, *, reference_fps=None,
        device: str = "cpu", n_jobs: int = 1) -> float:
    """Mean over valid generated molecules of the max Tanimoto similarity (Morgan r=2, 1024 bits)
    to the reference molecules (or their uint8 (N, 1024) fingerprints)."""
    if (reference is None) == (reference_fps is None):
        raise ValueError("give exactly one of reference (SMILES) and reference_fps (uint8 (N, 1024))")
    gen_fps, gen_counts = _as_set("generated", generated, n_jobs).fingerprints()
    if reference_fps is None:
        reference_fps = _reference_fingerprints(reference, n_jobs)
    if gen_fps.shape[0] == 0:
        return float("nan")
    nearest = tanimoto_aggregate(gen_fps, reference_fps, agg="max", device=device)
    return float(nearest @ gen_counts / gen_counts.sum())


def _reference_fingerprints(reference: Sequence[str], n_jobs: int) -> np.ndarray:
    # MOSES fingerprints every reference molecule (duplicates too); a max ignores duplicates anyway
    ref = _as_set("reference", reference, n_jobs)
    return ref.fingerprints()[0]


def frag(generated: Sequence[str], reference: Optional[Sequence[str]] = None, *, reference_counts=None,
         n_jobs: int = 1) -> float:
    """Cosine similarity of BRICS fragment counts of valid generated vs reference molecules."""
    if (reference is None) == (reference_counts is None):
        raise ValueError("give exactly one of reference (SMILES) and reference_counts (Counter)")
    if reference_counts is None:
        reference_counts = _as_set("reference", reference, n_jobs).counter("frag")
    return _cos_similarity(reference_counts, _as_set("generated", generated, n_jobs).counter("frag"))


def scaf(generated: Sequence[str], reference: Optional[Sequence[str]] = None, *, reference_counts=None,
         n_jobs: int = 1) -> float:
    """Cosine similarity of Bemis-Murcko scaffold counts (scaffolds with >= 2 rings) vs reference."""
    if (reference is None) == (reference_counts is None):
        raise ValueError("give exactly one of reference (SMILES) and reference_counts (Counter)")
    if reference_counts is None:
        reference_counts = _as_set("reference", reference, n_jobs).counter("scaf")
    return _cos_similarity(reference_counts, _as_set("generated", generated, n_jobs).counter("scaf"))


def internal_diversity(generated: Sequence[str], p: int = 1, *, device: str = "cpu", n_jobs: int = 1) -> float:
    """1 - mean_i (mean_j T(i, j)^p)^(1/p) over all pairs of valid generated molecules, self-pairs
    and duplicates included (MOSES IntDiv for p = 1, IntDiv2 for p = 2)."""
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    fps, counts = _as_set("generated", generated, n_jobs).fingerprints()
    if fps.shape[0] == 0:
        return float("nan")
    mean_similarity = tanimoto_aggregate(fps, fps, agg="mean", p=p, reference_weights=counts, device=device)
    return float(1.0 - mean_similarity @ counts / counts.sum())


def fraction_passes_filters(generated: Sequence[str], n_jobs: int = 1) -> float:
    """Share of valid generated molecules passing MOSES's filters (see the module doc)."""
    gen = _as_set("generated", generated, n_jobs)
    if not gen.smiles:
        return float("nan")
    passes = np.array([bool(x) for x in gen.features("filters")["filters"]], dtype=np.float64)
    return float(passes @ gen.counts / gen.counts.sum())


def property_distances(generated: Sequence[str], reference: Optional[Sequence[str]] = None, *,
                       reference_values: Optional[dict] = None, n_jobs: int = 1) -> dict[str, float]:
    """Wasserstein-1 distances of logP, SA, QED and weight: {"logp", "sa", "qed", "weight"}."""
    if (reference is None) == (reference_values is None):
        raise ValueError("give exactly one of reference (SMILES) and reference_values (dict of arrays)")
    if reference_values is None:
        reference_values = _as_set("reference", reference, n_jobs).property_values()
    values = _as_set("generated", generated, n_jobs).property_values()
    return {name: wasserstein_1d(reference_values[name], values[name]) for name in _PROPERTIES}


# --------------------------------------------------------------------------------------------
def reference_statistics(smiles: Sequence[str], *, device: str = "cpu", n_jobs: int = 1,
                         batch_size: int = 512, with_fcd: bool = True) -> dict:
    """What moses_metrics needs of a reference set (MOSES compute_intermediate_statistics):
    same layout as `precomputed_statistics`."""
    ref = _as_set("smiles", smiles, n_jobs)
    stats: dict[str, Any] = {"snn": {"fps": ref.fingerprints()[0]}, "frag": ref.counter("frag"),
                             "scaf": ref.counter("scaf"), **ref.property_values()}
    if with_fcd:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats["fcd"] = _fcd_model(device, n_jobs, batch_size).precalc(ref.smiles_with_duplicates())
    return stats


def _load_split(split: str) -> list[str]:
    from genkernels.data.smiles import load_moses_smiles
    return load_moses_smiles(split)


def moses_metrics(generated: Sequence[str], *, test: Optional[Sequence[str]] = None,
                  test_scaffolds: Optional[Sequence[str]] = None, train: Optional[Sequence[str]] = None,
                  k: Sequence[int] | int = (1000, 10000), n_jobs: int = 1, device: str = "cpu",
                  batch_size: int = 512, use_precomputed: bool = True) -> dict[str, float]:
    """All MOSES metrics of a list of generated SMILES (see the module doc), as get_all_metrics.

    test / test_scaffolds / train default to the MOSES splits; with use_precomputed (and the default
    test sets) the reference statistics come from the wheel's test_stats.npz and
    test_scaffolds_stats.npz instead of being computed (computing them takes many CPU minutes).
    Returns floats under METRIC_KEYS order (unique@k keys follow `k`).
    """
    require_rdkit()
    _require_fcd()
    generated = _check_smiles_list("generated", generated)
    if not generated:
        raise ValueError("generated is empty")
    ks = [k] if isinstance(k, int) else list(k)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ks):
        raise ValueError(f"k must be a positive int or a sequence of them, got {k!r}")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, got {n_jobs!r}")

    references = {}
    for key, given, split in (("test", test, "test"), ("testsf", test_scaffolds, "test_scaffolds")):
        if given is None and use_precomputed:
            references[key] = precomputed_statistics(split)
        else:
            smiles = _load_split(split) if given is None else _check_smiles_list(split, given)
            references[key] = reference_statistics(smiles, device=device, n_jobs=n_jobs, batch_size=batch_size)

    canonical = _map(canonical_smiles, generated, n_jobs)
    valid = [s for s in canonical if s is not None]
    metrics: dict[str, float] = {"valid": 1.0 - (len(canonical) - len(valid)) / len(canonical)}
    for x in ks:
        metrics[f"unique@{x}"] = fraction_unique(valid, x, check_validity=False) if valid else float("nan")
    gen = _MoleculeSet(valid, n_jobs)
    gen.features(*_FEATURES)  # one parse and one worker pool for every per-molecule feature
    metrics["novelty"] = novelty(gen, set(_load_split("train")) if train is None else set(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generated_fcd = _fcd_model(device, n_jobs, batch_size).precalc(gen.smiles_with_duplicates())
    for key, ref in references.items():
        metrics[f"fcd/{key}"] = fcd(gen, reference_stats=ref["fcd"], generated_stats=generated_fcd,
                                    device=device, n_jobs=n_jobs, batch_size=batch_size)
        metrics[f"snn/{key}"] = snn(gen, reference_fps=ref["snn"]["fps"], device=device, n_jobs=n_jobs)
        metrics[f"frag/{key}"] = frag(gen, reference_counts=ref["frag"])
        metrics[f"scaf/{key}"] = scaf(gen, reference_counts=ref["scaf"])
    metrics["intdiv"] = internal_diversity(gen, p=1, device=device)
    metrics["intdiv2"] = internal_diversity(gen, p=2, device=device)
    metrics["filters"] = fraction_passes_filters(gen)
    metrics.update(property_distances(gen, reference_values={n: references["test"][n] for n in _PROPERTIES}))
    order = ["valid"] + [f"unique@{x}" for x in ks] + [key for key in METRIC_KEYS
                                                       if key != "valid" and not key.startswith("unique@")]
    return {key: float(metrics[key]) for key in order}


def format_moses_table(rows: dict[str, dict[str, float]], keys: Optional[Sequence[str]] = None,
                       digits: int = 4) -> str:
    """A plain-text table: one row per model, one column per metric, "-" where a model lacks one.

    keys defaults to METRIC_KEYS order, restricted to keys at least one row has (then any others).
    """
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f"rows must be a non-empty dict model -> {{metric: value}}, got {rows!r:.80}")
    for model, values in rows.items():
        if not isinstance(values, dict):
            raise TypeError(f"rows[{model!r}] must be a dict metric -> value, got {type(values).__name__}")
    if keys is None:
        present = {key for values in rows.values() for key in values}
        keys = [key for key in METRIC_KEYS if key in present]
        keys += sorted(present - set(keys))
    keys = list(keys)

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}" if isinstance(value, (float, int, np.floating)) else str(value)

    header = ["model"] + keys
    body = [[str(model)] + [cell(values.get(key)) for key in keys] for model, values in rows.items()]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
             for line in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

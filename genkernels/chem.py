"""RDKit helpers for the molecule models: parsing, canonical SMILES, properties, drawings.

RDKit is an optional extra (`[chem]`): this module imports without it, and every function that
needs it calls `require_rdkit()`, which raises ImportError naming the install command.

Properties follow MOSES (Polykovskiy et al. 2020, molsets `moses/metrics/utils.py`):
qed     RDKit's QED (Bickerton et al. 2012), 0..1, higher = more drug-like
logp    Wildman-Crippen logP (`Crippen.MolLogP`)
sa      synthetic accessibility (Ertl & Schuffenhauer 2009), 1 (easy) .. 10 (hard), RDKit's
        Contrib `SA_Score/sascorer.py`
weight  average molecular weight in g/mol (`Descriptors.MolWt`)
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

INSTALL_HINT = 'pip install "genkernels[chem]" && pip install --no-deps molsets'
PROPERTY_NAMES = ("qed", "logp", "sa")  # the conditioning properties, in this order
ALL_PROPERTY_NAMES = ("qed", "logp", "sa", "weight")

_sascorer = None


def require_rdkit():
    """Return the `rdkit.Chem` module; ImportError with the install command when RDKit is missing."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as error:
        raise ImportError(f"molecule support needs RDKit: {INSTALL_HINT}") from error
    RDLogger.DisableLog("rdApp.*")  # invalid generated SMILES are expected; keep stderr quiet
    return Chem


def get_mol(smiles_or_mol: Any):
    """An RDKit Mol from a SMILES string (None when empty or unparsable), or the Mol itself.

    Same rule as MOSES `get_mol`: parse, then sanitize; a failure either way means invalid.
    """
    Chem = require_rdkit()
    if not isinstance(smiles_or_mol, str):
        return smiles_or_mol
    if len(smiles_or_mol) == 0:
        return None
    mol = Chem.MolFromSmiles(smiles_or_mol)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except ValueError:
        return None
    return mol


def canonical_smiles(smiles: Any) -> Optional[str]:
    """RDKit canonical (isomeric) SMILES of a SMILES string or Mol; None if invalid or empty."""
    Chem = require_rdkit()
    if smiles is None:
        return None
    mol = get_mol(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol)


def _map(function, items: Sequence[Any], n_jobs: int) -> list:
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, got {n_jobs!r}")
    items = list(items)
    if n_jobs == 1 or len(items) < 2000:
        return [function(item) for item in items]
    from multiprocessing import get_context
    with get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(n_jobs) as pool:
        return pool.map(function, items, chunksize=max(1, len(items) // (4 * n_jobs)))


def _check_smiles_list(name: str, smiles: Any) -> list:
    if isinstance(smiles, str):
        raise TypeError(f"{name} must be a sequence of SMILES strings, got a single str {smiles[:40]!r}")
    try:
        return list(smiles)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of SMILES strings, got {type(smiles).__name__}") from None


def canonical_list(smiles: Sequence[str], n_jobs: int = 1) -> list[Optional[str]]:
    """`canonical_smiles` of each item, in order (None where invalid); n_jobs > 1 uses processes."""
    require_rdkit()
    return _map(canonical_smiles, _check_smiles_list("smiles", smiles), n_jobs)


def _load_sascorer():
    global _sascorer
    if _sascorer is None:
        require_rdkit()
        from rdkit import RDConfig
        directory = os.path.join(RDConfig.RDContribDir, "SA_Score")
        if not os.path.exists(os.path.join(directory, "sascorer.py")):
            raise ImportError(f"RDKit's Contrib SA_Score is missing ({directory}); reinstall RDKit: {INSTALL_HINT}")
        import importlib.util
        spec = importlib.util.spec_from_file_location("genkernels_sascorer", os.path.join(directory, "sascorer.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _sascorer = module
    return _sascorer


def sa_score(mol: Any) -> float:
    """Synthetic accessibility score (Ertl & Schuffenhauer 2009) of a Mol or SMILES: 1 easy .. 10 hard."""
    parsed = get_mol(mol)
    if parsed is None:
        raise ValueError(f"mol must be an RDKit Mol or a valid SMILES string, got {mol!r}")
    return float(_load_sascorer().calculateScore(parsed))


def _properties_one(smiles: Any) -> tuple[float, float, float, float]:
    from rdkit.Chem import Crippen, Descriptors
    from rdkit.Chem.QED import qed
    mol = get_mol(smiles) if smiles is not None else None
    if mol is None:
        return (np.nan, np.nan, np.nan, np.nan)
    return (qed(mol), Crippen.MolLogP(mol), float(_load_sascorer().calculateScore(mol)), Descriptors.MolWt(mol))


def mol_properties(smiles: Sequence[str], n_jobs: int = 1) -> dict[str, np.ndarray]:
    """Properties of each molecule: {"qed", "logp", "sa", "weight"} -> float64 arrays (N,), NaN where invalid."""
    require_rdkit()
    _load_sascorer()
    values = _map(_properties_one, _check_smiles_list("smiles", smiles), n_jobs)
    table = np.array(values, dtype=np.float64).reshape(-1, len(ALL_PROPERTY_NAMES))
    return {name: table[:, i].copy() for i, name in enumerate(ALL_PROPERTY_NAMES)}


def draw_molecules(smiles: Sequence[str], legends: Optional[Sequence[str]] = None, nrow: int = 6,
                   size: int = 200):
    """A PIL image: a grid of 2-D depictions, `nrow` per row, each cell size x size pixels.

    Invalid SMILES are drawn as an empty cell with the legend "invalid".
    """
    Chem = require_rdkit()
    from rdkit.Chem import Draw
    smiles = _check_smiles_list("smiles", smiles)
    if not smiles:
        raise ValueError("smiles is empty: nothing to draw")
    if legends is not None:
        legends = [str(legend) for legend in legends]
        if len(legends) != len(smiles):
            raise ValueError(f"legends must have one entry per molecule ({len(smiles)}), got {len(legends)}")
    for name, value in (("nrow", nrow), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    mols, labels = [], []
    for i, s in enumerate(smiles):
        mol = get_mol(s) if isinstance(s, str) else None
        mols.append(mol if mol is not None else Chem.Mol())
        labels.append("invalid" if mol is None else (legends[i] if legends is not None else ""))
    return Draw.MolsToGridImage(mols, molsPerRow=min(nrow, len(mols)), subImgSize=(size, size),
                                legends=labels, returnPNG=False)


_PROPERTY_LABELS = {"logp": "logP", "sa": "SA score", "qed": "QED", "weight": "molecular weight (g/mol)"}


def property_figure(sets: dict[str, Sequence[str]], n_jobs: int = 1):
    """A matplotlib Figure: 2x2 density histograms of logP, SA, QED and weight, one curve per set.

    `sets` maps a label (e.g. "test", "CharRNN") to SMILES; invalid ones are skipped.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg via savefig

    if not isinstance(sets, dict) or not sets:
        raise ValueError(f"sets must be a non-empty dict label -> SMILES list, got {type(sets).__name__}")
    properties = {label: mol_properties(smiles, n_jobs=n_jobs) for label, smiles in sets.items()}
    figure = Figure(figsize=(9, 6.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    for axis, name in zip(axes, ("logp", "sa", "qed", "weight")):
        pooled = np.concatenate([p[name][np.isfinite(p[name])] for p in properties.values()])
        edges = np.histogram_bin_edges(pooled, bins=40) if pooled.size else np.linspace(0, 1, 41)
        for label, p in properties.items():
            values = p[name][np.isfinite(p[name])]
            if values.size:
                axis.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5,
                          label=f"{label} ({values.size})")
        axis.set_xlabel(_PROPERTY_LABELS[name])
        axis.set_ylabel("density")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return figure

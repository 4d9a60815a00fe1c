"""genkernels.chem: canonical SMILES, properties against RDKit, drawings, the no-RDKit error."""
import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("rdkit")

from genkernels import chem  # noqa: E402

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def test_canonical_smiles():
    assert chem.canonical_smiles("C1=CC=CC=C1") == "c1ccccc1"
    assert chem.canonical_smiles("OCC") == "CCO"
    assert chem.canonical_smiles("C[C@H](N)O") == chem.canonical_smiles("O[C@@H](N)C")  # same stereo
    assert "@" in chem.canonical_smiles("C[C@H](N)O")  # isomeric
    for bad in ("C1CC", "xyz", "", None, "c1cccc1"):  # last: cannot be kekulized
        assert chem.canonical_smiles(bad) is None


def test_canonical_list_keeps_order_and_marks_invalid():
    assert chem.canonical_list(["OCC", "bad", "C1=CC=CC=C1"]) == ["CCO", None, "c1ccccc1"]
    with pytest.raises(TypeError, match="single str"):
        chem.canonical_list("CCO")
    with pytest.raises(ValueError, match="n_jobs"):
        chem.canonical_list(["CCO"], n_jobs=0)


def test_properties_match_rdkit_descriptors():
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, QED

    props = chem.mol_properties(["c1ccccc1", ASPIRIN, "not a molecule"])
    assert set(props) == {"qed", "logp", "sa", "weight"}
    for i, smiles in enumerate(["c1ccccc1", ASPIRIN]):
        mol = Chem.MolFromSmiles(smiles)
        assert props["logp"][i] == pytest.approx(Crippen.MolLogP(mol), abs=1e-12)
        assert props["qed"][i] == pytest.approx(QED.qed(mol), abs=1e-12)
        assert props["weight"][i] == pytest.approx(Descriptors.MolWt(mol), abs=1e-9)
    # published values: benzene logP 1.6866 (Crippen), MW 78.114; aspirin logP 1.3101, MW 180.159
    assert props["logp"][:2] == pytest.approx([1.6866, 1.3101], abs=1e-4)
    assert props["weight"][:2] == pytest.approx([78.114, 180.159], abs=1e-3)
    assert props["qed"][1] == pytest.approx(0.550, abs=1e-3)
    assert props["sa"][:2] == pytest.approx([1.0, 1.580], abs=1e-3)  # SA is clipped at 1 (easiest)
    assert all(np.isnan(props[name][2]) for name in props)
    assert chem.PROPERTY_NAMES == ("qed", "logp", "sa")


def test_sa_score():
    assert chem.sa_score(ASPIRIN) == pytest.approx(1.580, abs=1e-3)
    hard = chem.sa_score("CC1(C)C2CCC1(C)C(=O)C2")  # camphor: bridged ring, stereo-rich
    assert 2.5 < hard < 10
    with pytest.raises(ValueError, match="mol"):
        chem.sa_score("C1CC")


def test_draw_molecules_grid_and_invalid_cell():
    image = chem.draw_molecules(["c1ccccc1", "C1CC", "CCO"], legends=["a", "b", "c"], nrow=2, size=100)
    assert image.size == (200, 200)
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    ink = lambda cell: (pixels[cell[0]:cell[0] + 100, cell[1]:cell[1] + 100] < 200).sum()  # noqa: E731
    assert ink((0, 100)) < ink((0, 0)) / 2  # the invalid molecule is an (almost) empty cell
    with pytest.raises(ValueError, match="legends"):
        chem.draw_molecules(["CCO"], legends=["a", "b"])


def test_property_figure(tmp_path):
    figure = chem.property_figure({"a": ["CCO", "c1ccccc1", ASPIRIN], "b": ["CCN", "bad"]})
    assert len(figure.axes) == 4
    assert [axis.get_xlabel() for axis in figure.axes][0] == "logP"
    figure.savefig(tmp_path / "props.png")
    assert (tmp_path / "props.png").stat().st_size > 1000


def test_missing_rdkit_names_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)
    monkeypatch.delitem(sys.modules, "genkernels.chem")
    fresh = importlib.import_module("genkernels.chem")  # imports without RDKit
    with pytest.raises(ImportError, match=r'pip install "genkernels\[chem\]" && pip install --no-deps molsets'):
        fresh.require_rdkit()
    with pytest.raises(ImportError, match="genkernels"):
        fresh.canonical_smiles("CCO")

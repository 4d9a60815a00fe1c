"""genkernels.molecules: the MOSES report, the baselines and the conditioning report."""
import math
from types import SimpleNamespace

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("fcd_torch")

from genkernels import molecules  # noqa: E402
from genkernels.data.smiles import load_moses_smiles  # noqa: E402


def test_moses_report_of_given_smiles_has_the_published_rows_and_the_model_row():
    test = load_moses_smiles("test")[:150]
    report = molecules.moses_report(generated=test + ["not a smiles"], name="test subset", baselines=())
    rows = report["rows"]
    assert "CharRNN (MOSES)" in rows and "test subset" in rows
    ours = rows["test subset"]
    assert math.isclose(ours["valid"], 150 / 151)
    assert ours["novelty"] == 1.0  # test molecules are not in train (MOSES splits are disjoint)
    assert ours["snn/test"] == pytest.approx(1.0)  # each one is in the test set itself
    assert "test subset" in report["table"] and "fcd/test" in report["table"]


def test_baselines_are_seeded_and_the_train_sample_comes_from_train():
    train = set(load_moses_smiles("train"))
    sample = molecules.baseline_samples("train sample", 20, seed=3)
    assert sample == molecules.baseline_samples("train sample", 20, seed=3) and set(sample) <= train
    ngram = molecules.baseline_samples("ngram (ours)", 10, seed=0, ngram_items=500, ngram_order=4)
    assert len(ngram) == 10 and all(isinstance(s, str) for s in ngram)
    with pytest.raises(ValueError, match="name"):
        molecules.baseline_samples("hmm", 5)


class _FakeConditional:
    """sample_smiles returns ethanol (QED ~0.41) unless asked for high QED, then paracetamol (~0.60)."""

    config = SimpleNamespace(conditional=True)
    name = "fake"

    def sample_smiles(self, n, temperature=1.0, qed=None, **_):
        return ["CC(=O)Nc1ccc(O)cc1" if qed is not None and qed > 0.5 else "CCO"] * n


def test_conditioning_report_measures_the_distance_to_the_target():
    from genkernels.chem import mol_properties

    rows = molecules.conditioning_report(_FakeConditional(), {"qed": [0.6]}, n=4)
    (row,) = rows
    qed_para = float(mol_properties(["CC(=O)Nc1ccc(O)cc1"])["qed"][0])
    qed_ethanol = float(mol_properties(["CCO"])["qed"][0])
    assert row["conditioned"]["mae"] == pytest.approx(abs(qed_para - 0.6))
    assert row["unconditional"]["mae"] == pytest.approx(abs(qed_ethanol - 0.6))
    assert row["conditioned"]["valid"] == 1.0 and row["conditioned"]["within"] == 1.0
    assert "qed" in molecules.format_conditioning(rows)
    with pytest.raises(ValueError, match="conditional=True"):
        molecules.conditioning_report(SimpleNamespace(config=SimpleNamespace()), {"qed": [0.5]})


def test_sample_figures_draw_valid_molecules_and_the_property_plot():
    figures = molecules.sample_figures(["CCO", "xx", "c1ccccc1"], reference={"test": load_moses_smiles("test")[:50]},
                                       count=2, nrow=2)
    assert figures["molecules"].size[0] > 0 and set(figures) == {"molecules", "properties"}

"""MOSES metrics: hand-checked small cases, a test subset against itself, filters, tables.

The numbers were also checked (during development, not here) against molsets 0.3.1's own
metric functions on 557 molecules: equal to 1e-16, IntDiv to 3e-8 (float32 Tanimoto).
"""
import importlib
import random
import sys

import numpy as np
import pytest

pytest.importorskip("rdkit")

from genkernels.metrics import molecules as M  # noqa: E402

A, B = "CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Nc1ccc(O)cc1"  # aspirin, paracetamol


def _tanimoto(x, y):
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return DataStructs.TanimotoSimilarity(gen.GetFingerprint(Chem.MolFromSmiles(x)),
                                          gen.GetFingerprint(Chem.MolFromSmiles(y)))


@pytest.fixture(scope="module")
def moses_test_subset():
    smiles = pytest.importorskip("genkernels.data.smiles")
    try:
        test = smiles.load_moses_smiles("test")
    except ImportError as error:
        pytest.skip(str(error))
    return random.Random(0).sample(test, 250)


def test_valid_and_unique_by_hand():
    generated = ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", "CCN", "xx", "", "C1CC"]
    assert M.fraction_valid(generated) == pytest.approx(5 / 8)
    valid = [s for s in generated if M.canonical_smiles(s)]
    assert M.fraction_unique(valid) == pytest.approx(3 / 5)
    assert M.fraction_unique(valid, k=2) == pytest.approx(1 / 2)  # CCO and OCC are one molecule
    with pytest.warns(UserWarning, match="unique@10"):
        assert M.fraction_unique(valid, k=10) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="invalid"):
        M.fraction_unique(generated)


def test_novelty_by_hand():
    # distinct valid: CCO, c1ccccc1, CCN; only CCO is a train string -> 2/3
    assert M.novelty(["OCC", "CCO", "C1=CC=CC=C1", "CCN", "bad"], train=["CCO", "CCCl"]) == pytest.approx(2 / 3)
    assert np.isnan(M.novelty(["bad"], train=["CCO"]))


def test_intdiv_and_snn_by_hand():
    t = _tanimoto(A, B)
    assert 0 < t < 1
    # pairs (A,A) (A,B) (B,A) (B,B): mean similarity (1 + t) / 2, self-pairs included as in MOSES
    assert M.internal_diversity([A, B]) == pytest.approx(1 - (1 + t) / 2, abs=1e-6)
    assert M.internal_diversity([A, B], p=2) == pytest.approx(1 - np.sqrt((1 + t * t) / 2), abs=1e-6)
    # duplicates count: A, A, B -> per-molecule means (2 + t)/3, (2 + t)/3, (2t + 1)/3
    assert M.internal_diversity([A, A, B, "bad"]) == pytest.approx(1 - (4 + 4 * t + 1) / 9, abs=1e-6)
    assert M.internal_diversity([A, A]) == pytest.approx(0.0, abs=1e-7)
    assert M.snn([A], [A, B]) == pytest.approx(1.0)
    assert M.snn([A, "bad"], [B]) == pytest.approx(t, abs=1e-6)


def test_tanimoto_aggregate_against_brute_force():
    rng = np.random.default_rng(0)
    query = (rng.random((37, 64)) < 0.2).astype(np.uint8)
    reference = (rng.random((53, 64)) < 0.2).astype(np.uint8)
    query[0] = 0
    reference[5] = 0  # two empty fingerprints: similarity 1 (MOSES)
    shared = query.astype(float) @ reference.T.astype(float)
    union = query.sum(1)[:, None] + reference.sum(1)[None, :] - shared
    with np.errstate(invalid="ignore"):
        similarity = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
    got = M.tanimoto_aggregate(query, reference, chunk=16)
    np.testing.assert_allclose(got, similarity.max(1), atol=1e-6)
    assert got[0] == 1.0
    weights = rng.integers(1, 4, size=53)
    mean2 = M.tanimoto_aggregate(query, reference, agg="mean", p=2, reference_weights=weights, chunk=16)
    np.testing.assert_allclose(mean2, np.sqrt((similarity ** 2 * weights).sum(1) / weights.sum()), atol=1e-6)


def test_wasserstein_1d():
    assert M.wasserstein_1d([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert M.wasserstein_1d([0.0, 0.0, 3.0], [0.0, 3.0]) == pytest.approx(0.5)  # |1/6 mass moved 3|
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=101), rng.normal(0.3, 2.0, size=57)
    assert M.wasserstein_1d(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)


def test_filters_reject_pains_and_moses_rules():
    passing = ["CC(=O)Nc1ccc(O)cc1", A]
    failing = ["S=C1SC(=Cc2ccccc2)C(=O)N1",  # PAINS ene_rhod (benzylidene rhodanine)
               "Oc1ccccc1O",  # PAINS catechol
               "O=C1C=CC(=O)C=C1",  # PAINS quinone
               "C[N+](C)(C)C",  # charged
               "CC[Si](C)C",  # atom outside C N S O F Cl Br H
               "C1CCCCCCC1"]  # ring of 8 atoms
    for smiles in passing:
        assert M.fraction_passes_filters([smiles]) == 1.0, smiles
    for smiles in failing:
        assert M.fraction_passes_filters([smiles]) == 0.0, smiles
    assert M.fraction_passes_filters(passing + failing + ["bad"]) == pytest.approx(2 / 8)  # invalid excluded


def test_frag_and_scaf_cosine():
    assert M.frag([A, B], [B, A, A]) == pytest.approx(M._cos_similarity(
        M._as_set("r", [B, A, A], 1).counter("frag"), M._as_set("g", [A, B], 1).counter("frag")))
    assert M.frag([A, B], [A, B]) == pytest.approx(1.0)
    # MOSES keeps scaffolds with >= 2 rings only: one-ring molecules give an empty count -> NaN
    assert np.isnan(M.scaf([A, B], [A]))
    naphthyl = ["Cc1ccc2ccccc2c1", "CCc1ccc2ccccc2c1", "c1ccc(-c2ccccc2)cc1"]
    assert M.scaf(naphthyl[:2], naphthyl[:2]) == pytest.approx(1.0)
    assert M.scaf(naphthyl[:2], naphthyl[2:]) == pytest.approx(0.0)


def test_test_subset_against_itself(moses_test_subset):
    sub = moses_test_subset
    with pytest.warns(UserWarning, match="unique@1000"):  # only 250 valid molecules
        metrics = M.moses_metrics(sub + ["bad", "", "C1CC"], test=sub, test_scaffolds=sub[:100],
                                  train=sub[:50], k=(100, 1000))
    assert list(metrics)[:3] == ["valid", "unique@100", "unique@1000"]
    assert metrics["valid"] == pytest.approx(250 / 253)
    assert metrics["unique@100"] == 1.0
    assert metrics["novelty"] == pytest.approx(200 / 250)
    assert abs(metrics["fcd/test"]) < 1e-3
    assert metrics["fcd/testsf"] > 0.1
    for key in ("snn/test", "frag/test", "scaf/test", "filters"):
        assert metrics[key] == pytest.approx(1.0), key
    assert 0.5 < metrics["snn/testsf"] < 1.0
    for key in ("logp", "sa", "qed", "weight"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-12), key
    assert 0.8 < metrics["intdiv2"] < metrics["intdiv"] < 0.9  # MOSES test set: IntDiv 0.857


def test_default_references_use_precomputed_stats(moses_test_subset):
    stats = M.precomputed_statistics("test")
    assert stats["snn"]["fps"].shape == (176074, 1024)
    # our Morgan bits are MOSES's: the stored fingerprint of the first test molecules
    from genkernels.data.smiles import load_moses_smiles
    first = load_moses_smiles("test")[:40]
    np.testing.assert_array_equal(np.stack([M._fingerprint(M.get_mol(s)) for s in first]), stats["snn"]["fps"][:40])
    metrics = M.moses_metrics(moses_test_subset[:150], k=100)
    assert set(metrics) == {"valid", "unique@100"} | set(M.METRIC_KEYS[3:])
    assert metrics["snn/test"] == pytest.approx(1.0)  # every molecule is in the test set
    assert metrics["novelty"] == pytest.approx(1.0)  # test molecules are not train strings
    assert 0.2 < metrics["snn/testsf"] < 0.8


def test_published_tables():
    assert set(PUBLISHED := M.PUBLISHED_MOSES) == {"Train", "HMM", "NGram", "Combinatorial", "CharRNN",
                                                    "AAE", "VAE", "JTN-VAE", "LatentGAN"}
    assert PUBLISHED["CharRNN"]["fcd/test"] == 0.0732 and PUBLISHED["VAE"]["novelty"] == 0.6949
    for row in list(PUBLISHED.values()) + list(M.PUBLISHED_MOSES_2018.values()):
        assert set(row) <= set(M.METRIC_KEYS)
    old = M.PUBLISHED_MOSES_2018  # the numbers issue 15 quotes (first README table)
    assert (old["CharRNN"]["valid"], old["CharRNN"]["unique@10000"], old["CharRNN"]["fcd/test"],
            old["CharRNN"]["frag/test"], old["CharRNN"]["scaf/test"], old["CharRNN"]["intdiv"],
            old["CharRNN"]["filters"]) == (0.9598, 0.9993, 0.3233, 0.9977, 0.7964, 0.8561, 0.9920)
    assert (old["VAE"]["valid"], old["VAE"]["fcd/test"]) == (0.9528, 0.2540)


def test_format_moses_table():
    text = M.format_moses_table({"ours": {"valid": 0.5, "fcd/test": 1.23456}, "CharRNN": {"valid": 0.9748}})
    lines = text.splitlines()
    assert lines[0].split() == ["model", "valid", "fcd/test"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["ours", "0.5000", "1.2346"]
    assert lines[3].split() == ["CharRNN", "0.9748", "-"]
    assert len({len(line) for line in lines}) == 1  # aligned
    assert M.format_moses_table({"a": {"x": 1.0}}, keys=["valid"]).splitlines()[2].split() == ["a", "-"]
    with pytest.raises(ValueError, match="rows"):
        M.format_moses_table({})


def test_imports_without_rdkit_and_fcd(monkeypatch):
    for name in ("rdkit", "fcd_torch"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("genkernels.chem", "genkernels.metrics.molecules"):
        monkeypatch.delitem(sys.modules, name)
    fresh = importlib.import_module("genkernels.metrics.molecules")
    assert "CharRNN" in fresh.PUBLISHED_MOSES and fresh.format_moses_table(fresh.PUBLISHED_MOSES)
    with pytest.raises(ImportError, match=r'pip install "genkernels\[chem\]" && pip install --no-deps molsets'):
        fresh.moses_metrics(["CCO"])

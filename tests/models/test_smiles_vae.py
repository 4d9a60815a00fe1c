"""SmilesVAE: shapes, the exact bidirectional encoder, cached generation against teacher forcing,
the KL warm-up, training on MOSES molecules, reconstruction after overfitting, latent optimisation
and argument checks. Tiny models on a few hundred molecules (one thread)."""
import importlib.util
import math

import pytest
import torch

from genkernels.models.smiles_vae import BOS, EOS, PAD, SmilesVAE, SmilesVAEConfig, _collate

if importlib.util.find_spec("moses") is None:
    pytest.skip("the MOSES data files are missing (pip install --no-deps molsets)", allow_module_level=True)
needs_rdkit = pytest.mark.skipif(importlib.util.find_spec("rdkit") is None, reason="rdkit not installed")

TINY = {"embed_dim": 16, "encoder_hidden": 32, "latent_dim": 8, "decoder_hidden": 64, "transformer_dim": 32,
        "transformer_layers": 2, "transformer_heads": 2, "property_hidden": 16, "dropout": 0.0,
        "eval_samples": 16, "eval_reconstruct": 16}


@pytest.fixture(scope="module")
def molecules():
    """300 MOSES training molecules as a SmilesDataset with its own (fitted) tokenizer: no encoding
    of the whole MOSES file."""
    from genkernels.data.smiles import SmilesDataset, load_moses_smiles

    return SmilesDataset(load_moses_smiles("train")[:300])


def _model(dataset, **overrides):
    values = {**TINY, "property_head": False, **overrides}
    return SmilesVAE(SmilesVAE.config_for_data(dataset, values))


def _batch(dataset, start=0, size=32):
    return _collate([dataset[i] for i in range(start, min(len(dataset), start + size))])


def _train(model, dataset, steps, batch_size=32, lr=3e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(dataset), (batch_size,), generator=generator).tolist()
        loss = model.loss(_collate([dataset[i] for i in rows]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_shapes_and_cached_generation_match_teacher_forcing(molecules, decoder):
    model = _model(molecules, decoder=decoder).eval()
    tokens = _batch(molecules, size=5)
    with torch.no_grad():  # the transformer's cached decoding is inference only
        mu, logvar = model.encode(tokens)
        assert mu.shape == logvar.shape == (5, 8)
        logits = model.decoder_logits(tokens, mu)
        assert logits.shape == (5, tokens.shape[1] - 1, model.config.vocab_size)
        # step-by-step (cached) decoding of the same tokens gives the teacher-forced logits
        state = model.decoder.start(mu)
        for t in range(6):
            step_logits, state = model.decoder.step(tokens[:, t], mu, state)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-4, rtol=1e-4)

    samples = model.sample(7, temperature=1.0)
    assert samples.shape == (7, model.config.max_len) and samples.dtype == torch.int64
    assert (samples[:, 0] == BOS).all()
    for row in samples.tolist():  # PAD only after EOS
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
        assert PAD not in row[:row.index(EOS) if EOS in row else len(row)]
    strings = model.decode_latent(torch.randn(3, 8), greedy=True)
    assert len(strings) == 3 and all(isinstance(s, str) for s in strings)
    assert model.decode_latent(mu, greedy=True) == model.decode_latent(mu, greedy=True)  # deterministic
    assert len(model.sample_smiles(5, batch_size=2)) == 5


def test_encoder_reads_exactly_the_molecule(molecules):
    """Extra trailing padding changes nothing: the backward LSTM reads each row reversed within its
    length, not the padding first."""
    model = _model(molecules, max_len=molecules.max_len + 10).eval()
    tokens = _batch(molecules, size=4)
    padded = torch.cat([tokens, torch.zeros(4, 10, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(padded)[0], model.encode(tokens)[0], atol=1e-5, rtol=1e-5)
        # and a row alone encodes as in the batch
        torch.testing.assert_close(model.encode(tokens[2:3])[0], model.encode(tokens)[0][2:3], atol=1e-5, rtol=1e-5)


def test_kl_warmup_schedule(molecules):
    model = _model(molecules, beta=0.4, kl_warmup=10)
    assert model.kl_weight(0) == 0.0
    assert model.kl_weight(5) == pytest.approx(0.2)
    assert model.kl_weight(10) == model.kl_weight(1000) == pytest.approx(0.4)
    batch = _batch(molecules, size=8)
    model.train()
    betas = [float(model.loss(batch)["beta"]) for _ in range(3)]
    assert betas == pytest.approx([0.0, 0.04, 0.08])
    assert int(model.kl_step) == 3
    with torch.no_grad():  # evaluation does not advance the clock
        model.loss(batch)
    model.eval()
    model.loss(batch)
    assert int(model.kl_step) == 3
    assert "kl_step" in model.state_dict()  # checkpoints carry the clock
    assert _model(molecules, kl_warmup=0, beta=0.3).kl_weight(0) == pytest.approx(0.3)
    # free bits: each dimension's KL counts as at least free_bits nats in the objective
    free = _model(molecules, kl_warmup=0, beta=1.0, free_bits=5.0).eval()
    with torch.no_grad():
        losses = free.loss(batch)
    tokens = (batch[:, 1:] != PAD).sum()
    assert float(losses["loss"]) >= float((losses["recon"] * 8 + 5.0 * 8 * 8) / tokens) - 1e-4


def test_loss_decreases_on_moses(molecules):
    model = _model(molecules, kl_warmup=20, beta=0.1, word_dropout=0.1)
    held = _batch(molecules, start=268, size=32)
    model.eval()
    with torch.no_grad():
        before = model.loss(held)
    assert before["loss"].ndim == 0 and set(before) >= {"loss", "recon", "kl", "nats_per_token", "beta"}
    assert float(before["loss"]) == pytest.approx(math.log(model.config.vocab_size), rel=0.1)
    _train(model, molecules, steps=40)
    with torch.no_grad():
        after = model.loss(held)
    assert float(after["recon"]) < 0.75 * float(before["recon"])
    assert float(after["nats_per_token"]) < 0.75 * float(before["nats_per_token"])


def test_reconstructs_training_molecules_after_overfitting(molecules):
    from genkernels.data.smiles import SmilesDataset

    few = SmilesDataset(molecules.smiles[:6], tokenizer=molecules.tokenizer, max_len=molecules.max_len)
    model = _model(few, beta=0.01, kl_warmup=0, latent_dim=16, decoder_hidden=96)
    _train(model, few, steps=220, batch_size=6, lr=1e-2)
    tokens = _batch(few, size=6)
    decoded = model.reconstruct(tokens)
    exact = sum(a == b for a, b in zip(decoded, few.smiles))
    assert exact >= 4, list(zip(decoded, few.smiles))


@needs_rdkit
def test_property_head_evaluate_and_optimize_latent(molecules):
    from genkernels.chem import mol_properties

    with_props = molecules.with_properties()
    model = _model(molecules, property_head=True, beta=0.05, kl_warmup=0)
    assert model.config.property_mean is not None and model.prepare_dataset(molecules).properties is not None
    _train(model, with_props, steps=30)
    batch = _batch(with_props, size=16)
    assert "property_mse" in model.loss(batch)
    predicted = model.predict_properties(model.encode(batch[0])[0])
    assert predicted.shape == (16, 3)

    metrics = model.evaluate(with_props, max_items=32, batch_size=16)
    for key in ("loss", "recon", "kl", "nats_per_token", "reconstruction", "valid", "unique", "property_mse",
                "active_units"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["reconstruction"] <= 1.0 and 0.0 <= metrics["valid"] <= 1.0
    samples = model.sample(6)
    assert model.sample_files(samples)["samples.smi"].decode().count("\n") == 6
    assert isinstance(model.figures(samples), dict)
    assert model.sample(4, qed=0.9).shape == (4, model.config.max_len)

    starts = molecules.smiles[:6]
    report = model.optimize_latent(starts, property="qed", steps=20, lr=0.1, decode_every=5,
                                   training_smiles=molecules.smiles)
    assert report["property"] == "qed" and report["goal"] == "max"
    assert report["num_decoded"] == 6 * 4
    assert report["num_start"] == 6
    assert report["start_mean"] == pytest.approx(float(mol_properties(starts)["qed"].mean()), abs=1e-6)
    assert 0.0 <= report["fraction_valid"] <= 1.0
    assert len(report["best"]) <= min(10, report["num_novel"])
    values = [v for _, v in report["best"]]
    assert values == sorted(values, reverse=True)
    assert all(s not in molecules.smiles for s, _ in report["best"])
    if report["num_novel"]:
        assert report["improvement"] == pytest.approx(report["end_mean"] - report["start_mean"])
    else:
        assert math.isnan(report["end_mean"])
    # the ascent itself: the head's prediction rises from the start molecules' means
    assert report["predicted_end"] > report["predicted_start"]
    # sa is minimised by default
    assert model.optimize_latent(starts[:2], property="sa", steps=2, decode_every=2)["goal"] == "min"


def test_bad_arguments_raise_naming_them(molecules):
    for field, value in (("decoder", "gru"), ("word_dropout", 1.0), ("beta", -1.0), ("latent_dim", 0),
                         ("transformer_heads", 3), ("property_mean", (1.0, 2.0))):
        with pytest.raises(ValueError, match=field):
            SmilesVAEConfig(**{field: value})
    with pytest.raises(TypeError, match="kl_warmup"):
        SmilesVAEConfig(kl_warmup=1.5)
    model = _model(molecules).eval()
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)
    with pytest.raises(ValueError, match="z must have shape"):
        model.decode_latent(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens must lie"):
        model.encode(torch.full((2, 5), 999))
    with pytest.raises(ValueError, match="max_len"):
        model.encode(torch.ones(1, model.config.max_len + 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="property head"):
        model.optimize_latent(["CCO"])
    with pytest.raises(ValueError, match="property head"):
        model.sample(2, qed=0.5)
    head = _model(molecules, property_head=True, property_mean=(0.8, 2.5, 2.5), property_std=(0.1, 1.0, 0.5))
    with pytest.raises(ValueError, match="property"):
        head.optimize_latent(["CCO"], property="weight")
    with pytest.raises(ValueError, match="goal"):
        head.optimize_latent(["CCO"], goal="up")
    with pytest.raises(ValueError, match="smiles"):
        head.optimize_latent([])
    with pytest.raises(ValueError, match="steps"):
        head.optimize_latent(["CCO"], steps=0)
    head.train()
    with pytest.raises(ValueError, match="properties"):
        head.loss(_batch(molecules, size=4))


def test_config_round_trip(molecules):
    model = _model(molecules, decoder="transformer", word_dropout=0.2).eval()
    clone = SmilesVAE.from_config_dict(model.config_dict())
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    clone.eval()
    z = torch.randn(3, 8)
    assert clone.decode_latent(z) == model.decode_latent(z)
    assert clone.tokenizer.to_json() == molecules.tokenizer.to_json()
    model.check_dataset(molecules)
    with pytest.raises(ValueError, match="another vocabulary"):
        from genkernels.data.smiles import SmilesDataset

        model.check_dataset(SmilesDataset(["CCO", "c1ccccc1"]))

"""The runnable examples in python/ run end to end (a few steps each) through the public API."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One classifier cache for all examples: the digits classifier trains once."""
    return tmp_path_factory.mktemp("genkernels-cache")


@pytest.mark.parametrize("script, extra, expect", [
    ("train_vae.py", ["--steps", "30"], "anomaly score"),
    ("train_gan.py", ["--steps", "30"], "frechet_distance"),
    ("diffusion_toy2d.py", ["--steps", "60", "--sample-steps", "5"], "samples  vs held-out"),
    ("pixelcnn_digits.py", ["--steps", "20", "--channels", "8", "--num-layers", "2", "--num-classes", "10"], "test NLL"),
    ("flow_digits.py", ["--steps", "4", "--hidden-channels", "8", "--num-classes", "10"], "test NLL"),
    ("wavenet_audio.py", ["--steps", "4", "--channels", "8", "--cycles", "1", "--seconds", "0.05",
                          "--samples", "2", "--val-clips", "2", "--test-clips", "2"], "bits/sample"),
    ("flow_toy2d.py", ["--data", "moons", "--steps", "30", "--blocks", "2", "--hidden", "16", "--test-points", "200"],
     "held-out log-likelihood"),
    ("flow_anomaly.py", ["--steps", "20", "--hidden", "32", "--score-draws", "1"], "ROC AUC"),
    ("anomaly_digits.py", ["--steps", "3", "--size", "tiny", "--test-items", "60", "--score-draws", "1"], "ROC AUC"),
    ("semisupervised_digits.py", ["--steps", "5", "--labels", "50", "--alphas", "paper", "--seeds", "0", "1",
                                  "--hidden", "16"], "labels-only"),
    ("diffusion_digits.py", ["--steps", "4", "--samples", "20", "--sample-steps", "2", "--eval-items", "4",
                             "--base-channels", "8", "--guidance", "1", "3"], "real digits (train vs test)"),
    ("diffusion_inpaint.py", ["--steps", "4", "--images", "16", "--sample-steps", "3", "--eval-items", "4",
                              "--base-channels", "8"], "known pixels exact"),
    ("diffusion_text2digits.py", ["--steps", "4", "--per-caption", "4", "--held-out", "10", "--sample-steps", "2",
                                  "--eval-items", "4", "--base-channels", "8", "--text-dim", "16",
                                  "--guidance", "1", "3"], "held-out captions"),
    ("bert_fill_mask.py", ["--steps", "6", "--dim", "16", "--depth", "1", "--heads", "2", "--max-bytes", "50000",
                           "--eval-items", "8", "--top-k", "2"], "unigram baseline"),
    ("diffusion_superres.py", ["--steps", "4", "--images", "16", "--average", "2", "--sample-steps", "2",
                               "--eval-items", "4", "--base-channels", "8"], "bicubic"),
    ("seq2seq_arithmetic.py", ["--steps", "10", "--dim", "32", "--train-size", "300", "--test-size", "16",
                               "--show", "2", "--beam-size", "2"], "test exact match: greedy"),
    ("gpt_stdlib.py", ["--steps", "4", "--dim", "32", "--depth", "1", "--heads", "2", "--test-items", "8",
                       "--new-tokens", "8"], "same tokens: True"),
    ("forecast_seasonal.py", ["--quick"], "seasonal naive (m=24)"),
    ("music_lstm_chorales.py", ["--quick"], "test NLL (nats/event): MusicLSTM"),
    ("vqvae_compress.py", ["--steps", "4", "--prior-steps", "2", "--channels", "8", "16", "--num-codes", "16",
                           "--code-dim", "4", "--prior-channels", "8", "--prior-layers", "2", "--test-items", "16"],
     "lossless codes True"),
    ("style_transfer.py", ["--size", "24", "--steps", "3"], "style loss"),
    ("fast_style.py", ["--quick"], "stylising a"),
    ("molecules_moses.py", ["--quick", "--conditional"], "property-conditioned samples"),
    ("molecules_moses.py", ["--quick", "--model", "smiles-vae"], "latent optimisation of QED"),
    ("char_lstm_stdlib.py", ["--quick"], "same tokens: True"),
    ("latent_tools.py", ["--quick", "--real-per-class", "2", "--seeds", "0", "--synth-per-class", "2"], "real only"),
])
def test_example_runs(tmp_path, cache_dir, script, extra, expect):
    args = [sys.executable, str(ROOT / "python" / script), *extra]
    env = {**os.environ, "GENKERNELS_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expect in result.stdout
    if script.startswith("train_"):
        # the default output folder is the example's own, never the CLI's runs/<model>
        out = tmp_path / "runs" / "examples" / script.removesuffix(".py")
        assert (out / "loss.png").is_file() and (out / "checkpoint" / "trainer.json").is_file()
        assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["examples"]

"""The genkernels command: smoke runs of train/sample/eval, help, and one-line errors."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from genkernels.cli import main
from genkernels.models import REGISTRY

QUICK = ["--steps", "4", "--batch-size", "16", "--eval-every", "2", "--log-every", "2",
         "--eval-max-items", "48", "--num-samples", "8", "--checkpoint-every", "0", "--no-progress",
         "--device", "cpu"]
RUN_FILES = {"samples.png", "loss.png", "metrics.json", "metrics.jsonl", "checkpoint"}


def has_data() -> bool:
    return importlib.util.find_spec("genkernels.data") is not None


@pytest.fixture
def toy_model(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", "tests.train.toys:ToyAutoencoder")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- help ----------------------------------------------------------------------------------
def test_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("train", "sample", "eval", "info", "bench"):
        assert command in out


def test_train_help_documents_the_flags(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    for flag in ("--data", "--steps", "--batch-size", "--lr", "--device", "--precision", "--compile",
                 "--out", "--resume", "--seed", "--eval-every", "--set", "--skip-nonfinite", "samples.png",
                 "loss.png", "metrics.json", "checkpoint/"):
        assert flag in out, flag


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_help_state_each_default_once(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    options = " ".join(out.split()).split(" -")  # one chunk per option, wrapped lines joined
    assert all(chunk.count("default") <= 1 for chunk in options), out
    if command == "sample":  # the --condition keys of every model
        assert "vae: mode, temperature" in out and "gan: labels" in out


def test_python_dash_m_genkernels():
    result = subprocess.run([sys.executable, "-m", "genkernels", "--version"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("genkernels ")


# -- errors: one line on stderr, non-zero exit, no traceback -------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "no-such-model"],
    ["train", "toy", "--bogus-flag"],
    ["train", "toy", "--steps", "many"],
    ["train", "toy", "--precision", "fp8"],
    ["train", "toy", "--set", "no_such_field=1"],
    ["train", "toy", "--steps", "0"],
    ["train", "toy", "--resume", "--out", "nowhere"],
    ["train", "toy", "--lr", "inf"],
    ["train", "toy", "--grad-clip", "nan"],
    ["train", "toy", "--steps", "-3"],
    ["train", "vae", "--set", "latent_dim=2.5"],
    ["train", "vae", "--set", "beta=nan"],
    ["train", "gan", "--set", "gp_weight=-1"],
    ["sample", "no/such/checkpoint"],
    ["sample", "run", "--nrow", "0"],
    ["sample", "run", "-n", "0"],
    ["eval", "no/such/checkpoint"],
    ["eval", "run", "--batch-size", "0"],
    ["eval", "run", "--max-items", "0"],
    ["eval", "run", "--max-items", "-5"],
    ["frobnicate"],
    [],
])
def test_bad_command_lines_fail_in_one_line(capsys, toy_model, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err and "Traceback" not in err


@pytest.mark.skipif(not has_data(), reason="genkernels.data not available")
def test_unknown_data_fails_in_one_line(capsys, toy_model, tmp_path):
    code, _, err = run(capsys, "train", "toy", "--data", "no-such-data", "--out", str(tmp_path), *QUICK)
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "no-such-data" in err


# -- smoke runs with a toy model on the digits -----------------------------------------------
@pytest.mark.skipif(not has_data(), reason="genkernels.data not available")
def test_train_sample_eval_resume(capsys, toy_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default --out is runs/MODEL under the working directory
    code, out, err = run(capsys, "train", "toy", "--data", "digits", "--set", "side=8", *QUICK)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "toy"
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert str(run_dir.relative_to(tmp_path)) in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["data"] == "digits"
    assert "val/loss" in metrics["eval"] and "train/loss" in metrics["train"]

    code, out, err = run(capsys, "sample", str(run_dir), "-n", "6", "--seed", "1", "--device", "cpu")
    assert code == 0, err
    assert {"samples.png", "samples.safetensors"} <= {p.name for p in (run_dir / "samples").iterdir()}
    code, _, err = run(capsys, "sample", str(run_dir), "-n", "4", "--condition", "temperature=0.5",
                       "--out", str(tmp_path / "cold"))
    assert code == 0, err
    assert (tmp_path / "cold" / "samples.png").exists()
    code, _, err = run(capsys, "sample", str(run_dir), "--condition", "colour=3")
    assert code == 2 and "colour" in err and len(err.strip().splitlines()) == 1
    assert "toy sample takes temperature" in err  # the valid keys

    code, out, err = run(capsys, "eval", str(run_dir / "checkpoint"), "--split", "val", "--max-items", "40",
                         "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert result["step"] == 4 and result["data"] == "digits" and result["split"] == "val"
    assert set(result["losses"]) == {"loss", "l1"} and "mean_abs_code" in result["metrics"]

    code, out, err = run(capsys, "train", "toy", "--resume", *QUICK[2:], "--steps", "6")
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 6
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6

    # an explicit checkpoint path keeps writing into its run directory, from any working directory
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run(capsys, "train", "toy", "--resume", str(run_dir / "checkpoint"), "--steps", "7",
                       "--no-progress")
    assert code == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 7
    assert not any((tmp_path / "elsewhere").iterdir())


# -- the real model zoo --------------------------------------------------------------------
@pytest.mark.parametrize("model", ["vae", "gan"])
def test_zoo_model_smoke(capsys, tmp_path, model):
    if model not in REGISTRY or not has_data():
        pytest.skip(f"{model!r} is not registered (or genkernels.data is missing)")
    out_dir = tmp_path / model
    code, _, err = run(capsys, "train", model, "--out", str(out_dir), *QUICK)
    assert code == 0, err
    assert RUN_FILES <= {p.name for p in out_dir.iterdir()}
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "4", "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "s" / "samples.png").exists()
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "32", "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["model"] == model


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_zoo_model_fits_a_user_image_folder(capsys, tmp_path, model):
    """A folder of 16x16 RGB images: image_shape (and num_levels) come from the data."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(24):
        pixels = (torch.rand(16, 16, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    out_dir = tmp_path / model
    code, _, err = run(capsys, "train", model, "--data", str(folder), "--out", str(out_dir), *QUICK)
    assert code == 0, err
    config = json.loads((out_dir / "checkpoint" / "trainer.json").read_text())
    assert list(config["model"]["config"]["image_shape"]) == [3, 16, 16]
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "4", "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err


def test_flow_trains_on_a_2d_toy(capsys, tmp_path):
    """`genkernels train maf --data moons`: held-out log-likelihood beside its baselines, a density
    heat-map as samples.png, then sample and eval from the run."""
    out_dir = tmp_path / "maf"
    code, _, err = run(capsys, "train", "maf", "--data", "moons", "--out", str(out_dir), "--set", "hidden=8",
                       "--set", "num_blocks=2", *QUICK)
    assert code == 0, err
    assert RUN_FILES <= {p.name for p in out_dir.iterdir()}
    metrics = json.loads((out_dir / "metrics.json").read_text())["eval"]
    assert {"eval/loglik_nats", "eval/gaussian_loglik_nats", "eval/kde_loglik_nats", "val/loss"} <= set(metrics)
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "16", "--condition", "temperature=0.5",
                       "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "s" / "samples.png").exists()
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "32", "--device", "cpu")
    assert code == 0, err
    assert "loglik_nats" in json.loads(out)["metrics"]


def test_image_model_on_non_image_data_fails_in_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "train", "vae", "--data", "moons", "--out", str(tmp_path / "r"), *QUICK)
    assert code != 0
    assert "vae trains on images" in err and "moons" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A 2-step VAE run on the digits (shared by the eval / sample / checkpoint checks below)."""
    out = tmp_path_factory.mktemp("vae-run")
    argv = ["train", "vae", "--out", str(out), "--set", "hidden=16", "--set", "latent_dim=2", *QUICK, "--steps", "2",
            "--skip-nonfinite"]
    assert main(argv) == 0
    return out


def test_skip_nonfinite_reaches_the_train_config(vae_run):
    assert json.loads((vae_run / "checkpoint" / "trainer.json").read_text())["train_config"]["skip_nonfinite"] is True


def one_line_error(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "error" in err and "Traceback" not in err


def test_eval_on_the_wrong_kind_of_data_fails_in_one_line(capsys, vae_run):
    code, _, err = run(capsys, "eval", str(vae_run), "--data", "moons", "--device", "cpu")
    assert code != 0 and one_line_error(err)
    assert "vae trains on images" in err and "moons" in err


def test_resuming_on_another_kind_of_data_fails_in_one_line(capsys, vae_run):
    code, _, err = run(capsys, "train", "vae", "--resume", str(vae_run / "checkpoint"), "--data", "moons",
                       "--steps", "3", "--no-progress", "--device", "cpu")
    assert code != 0 and one_line_error(err) and "moons" in err


def test_run_figures_are_rewritten_not_left_stale(capsys, vae_run, tmp_path):
    """samples.png used to be written only when missing: a second run left the first run's grid."""
    out = tmp_path / "s"
    pictures = []
    for seed in ("1", "2"):
        code, _, err = run(capsys, "sample", str(vae_run), "-n", "8", "--seed", seed, "--out", str(out),
                           "--device", "cpu")
        assert code == 0, err
        pictures.append({p.name: p.read_bytes() for p in out.glob("*.png")})
    assert set(pictures[0]) == {"samples.png", "reconstructions.png", "interpolations.png"}
    assert pictures[0]["samples.png"] != pictures[1]["samples.png"]
    code, _, err = run(capsys, "sample", str(vae_run), "-n", "8", "--nrow", "2", "--out", str(out), "--device", "cpu")
    assert code == 0, err
    from PIL import Image

    with Image.open(out / "samples.png") as image:
        assert image.height > image.width  # 2 columns, 4 rows


def test_wrong_condition_key_lists_the_valid_ones(capsys, vae_run):
    code, _, err = run(capsys, "sample", str(vae_run), "--condition", "labels=3", "--device", "cpu")
    assert code == 2 and one_line_error(err)
    assert "vae sample takes mode, temperature" in err
    code, _, err = run(capsys, "sample", str(vae_run), "--condition", "temperature=nan", "--device", "cpu")
    assert code != 0 and one_line_error(err) and "temperature" in err


def test_checkpoint_config_that_no_longer_matches_fails_in_one_line(capsys, vae_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(vae_run / "checkpoint", broken)
    meta_file = broken / "trainer.json"
    meta = json.loads(meta_file.read_text())
    meta["model"]["config"]["hidden"] = 24  # the tensors were saved with hidden=16
    meta_file.write_text(json.dumps(meta))
    for command in ("sample", "eval"):
        code, _, err = run(capsys, command, str(broken), "--device", "cpu")
        assert code != 0 and one_line_error(err), err
        assert "broken" in err and "16" in err and "24" in err  # the file and both shapes


TINY_DIFFUSION = ["--set", "base_channels=8", "--set", "num_heads=2", "--set", "num_groups=4", "--set", "dim=16",
                  "--set", "depth=1", "--set", "sample_steps=2", "--set", "eval_samples=8", "--set", "text_dim=16"]


@pytest.mark.parametrize("options, condition, metric", [
    (["--set", "backbone=unet"], "labels=[7,7]", "class_accuracy"),
    (["--set", "backbone=dit"], "labels=3", "frechet_distance"),
    (["--set", "conditioning='caption'"], 'caption="three"', "caption_accuracy"),
], ids=["unet-class", "dit-class", "caption"])
def test_diffusion_train_sample_eval(capsys, tmp_path, options, condition, metric):
    """`genkernels train diffusion` (digits, class-conditional by default) with --set backbone=unet|dit
    and captions; `sample --condition labels=[7,7]` / 'caption="three"'; eval reports its metrics."""
    out_dir = tmp_path / "diffusion"
    code, _, err = run(capsys, "train", "diffusion", "--out", str(out_dir), *TINY_DIFFUSION, *options, *QUICK)
    assert code == 0, err
    assert RUN_FILES | {"guidance_1.png", "guidance_3.png", "guidance_5.png", "inpainting.png"} <= {
        p.name for p in out_dir.iterdir()}
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "2", "--condition", condition, "--condition", "steps=3",
                       "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "s" / "samples.png").exists()
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "8", "--device", "cpu")
    assert code == 0, err
    assert metric in json.loads(out)["metrics"]


def test_gpt_train_sample_eval(capsys, tmp_path):
    """`genkernels train gpt` on the bundled stdlib text; `sample --condition prompt=...` writes
    samples.txt starting with the prompt (into a folder that does not exist yet); eval reports bits
    per byte beside zlib and lzma on the same bytes."""
    out_dir = tmp_path / "gpt"
    code, _, err = run(capsys, "train", "gpt", "--out", str(out_dir), "--set", "dim=32", "--set", "depth=1",
                       "--set", "num_heads=2", *QUICK)
    assert code == 0, err
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "2", "--condition", 'prompt="def f(x):"',
                       "--condition", "max_new_tokens=8", "--out", str(tmp_path / "new" / "s"), "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "new" / "s" / "samples.txt").read_bytes().startswith(b"def f(x):")
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "4", "--device", "cpu")
    assert code == 0, err
    assert {"bits_per_byte", "zlib_bits_per_byte", "lzma_bits_per_byte"} <= set(json.loads(out)["metrics"])


def test_gpt_sample_prompt_streams_to_stdout(capsys, tmp_path):
    """`sample RUN --prompt TEXT` prints the prompt, then the continuation as it is generated (stdout
    is the text alone, the summary goes to stderr), with the text flags; samples.txt holds the same
    text. The flags and --condition for one keyword conflict in one line."""
    out_dir = tmp_path / "gpt"
    code, _, err = run(capsys, "train", "gpt", "--out", str(out_dir), "--set", "dim=32", "--set", "depth=1",
                       "--set", "num_heads=2", *QUICK)
    assert code == 0, err
    code, out, err = run(capsys, "sample", str(out_dir), "--prompt", "def fib(n):", "--max-new-tokens", "12",
                         "--temperature", "0.8", "--top-k", "50", "--top-p", "0.95", "--out", str(tmp_path / "s"),
                         "--device", "cpu")
    assert code == 0, err
    assert out.startswith("def fib(n):") and "genkernels sample: 1 samples of gpt" in err
    text = (tmp_path / "s" / "samples.txt").read_bytes().decode("utf-8")
    assert out == text + "\n" and len(text.encode("utf-8")) >= len("def fib(n):") + 1
    code, _, err = run(capsys, "sample", str(out_dir), "--prompt", "x", "--condition", "prompt='y'",
                       "--device", "cpu")
    assert code == 2 and one_line_error(err) and "--prompt" in err


def test_text_stream_never_splits_a_multibyte_character():
    import io

    from genkernels.cli import _TextStream

    out = io.StringIO()
    stream = _TextStream(object(), out)
    shown = []
    for byte in "aé€😀".encode("utf-8"):
        stream(0, torch.tensor([byte, 7]))
        shown.append(out.getvalue())
    stream(1, torch.tensor([-1, 7]))  # sequence 0 has stopped: nothing more
    stream.close()
    assert shown == ["a", "a", "aé", "aé", "aé", "aé€", "aé€", "aé€", "aé€", "aé€😀"]
    assert out.getvalue() == "aé€😀\n"


def test_prompt_on_a_family_without_prompts_fails_in_one_line(capsys, vae_run):
    code, out, err = run(capsys, "sample", str(vae_run), "--prompt", "def f():", "--device", "cpu")
    assert code == 2 and one_line_error(err) and not out
    assert "--prompt: vae does not take a text prompt" in err
    code, _, err = run(capsys, "sample", str(vae_run), "-n", "2", "--temperature", "0.5", "--out",
                       str(vae_run / "t"), "--device", "cpu")  # a keyword the family has is passed on
    assert code == 0, err


def test_seq2seq_train_sample_eval(capsys, tmp_path):
    """`genkernels train seq2seq` on the generated arithmetic task; `sample --condition problems=[...]`
    writes samples.txt (problem -> prediction); eval reports exact match beside the baselines."""
    out_dir = tmp_path / "seq2seq"
    code, _, err = run(capsys, "train", "seq2seq", "--out", str(out_dir), "--set", "dim=32", "--set", "num_heads=2",
                       "--set", "encoder_depth=1", "--set", "decoder_depth=1", *QUICK)
    assert code == 0, err
    assert (out_dir / "samples.txt").read_text().count("target") == 8  # held-out test problems
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "2", "--condition", 'problems=["1+2", "(3+4)*5"]',
                       "--condition", "beam_size=2", "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    lines = (tmp_path / "s" / "samples.txt").read_text().splitlines()
    assert lines[0].startswith("1+2 -> ") and lines[1].startswith("(3+4)*5 -> ")
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "8", "--device", "cpu")
    assert code == 0, err
    assert {"exact_match", "exact_match_beam4", "token_accuracy", "majority_answer_exact_match",
            "copy_source_exact_match"} <= set(json.loads(out)["metrics"])


def test_bert_train_sample_eval(capsys, tmp_path):
    """`genkernels train bert` (masked-language modelling on the stdlib text); `sample --condition
    text=...` fills the masks of a template; eval reports masked accuracy beside the unigram baseline."""
    out_dir = tmp_path / "bert"
    code, _, err = run(capsys, "train", "bert", "--out", str(out_dir), "--set", "dim=32", "--set", "depth=1",
                       "--set", "num_heads=2", *QUICK)
    assert code == 0, err
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "2", "--condition", 'text="def f(<mask><mask>):"',
                       "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    text = (tmp_path / "s" / "samples.txt").read_bytes()
    first = text.split(b"\n" + b"-" * 40 + b"\n")[0]
    assert first.startswith(b"def f(") and first.endswith(b"):")
    code, out, err = run(capsys, "eval", str(out_dir), "--max-items", "4", "--device", "cpu")
    assert code == 0, err
    assert {"masked_accuracy", "bits_per_masked_byte", "unigram_masked_accuracy",
            "unigram_bits_per_masked_byte"} <= set(json.loads(out)["metrics"])


# -- delegated commands --------------------------------------------------------------------
@pytest.mark.parametrize("command, module", [("info", "genkernels.info"), ("bench", "genkernels.bench")])
def test_delegated_commands_reach_their_module(capsys, monkeypatch, command, module):
    target = importlib.import_module(module) if importlib.util.find_spec(module) else None
    if not hasattr(target, "main"):
        pytest.skip(f"{module} not written yet")
    seen = {}
    monkeypatch.setattr(target, "main", lambda argv=None: seen.setdefault("argv", argv) and 0)
    assert main([command, "--some", "flag"]) == 0
    assert seen["argv"] == ["--some", "flag"]


def test_smiles_lstm_train_sample_and_moses_eval(capsys, tmp_path):
    """`genkernels train smiles-lstm` on the MOSES data; sample with a temperature; `eval --metrics
    moses` prints the MOSES table beside the published rows and writes the figures and the JSON."""
    pytest.importorskip("rdkit")
    pytest.importorskip("fcd_torch")
    out_dir = tmp_path / "smiles"
    code, _, err = run(capsys, "train", "smiles-lstm", "--out", str(out_dir), "--set", "hidden_size=16",
                       "--set", "embed_dim=8", "--steps", "3", "--eval-every", "0", "--no-progress",
                       "--num-samples", "4")
    assert code == 0, err
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "3", "--condition", "temperature=0.5",
                       "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    assert len((tmp_path / "s" / "samples.smi").read_text().splitlines()) == 3
    code, out, err = run(capsys, "eval", str(out_dir), "--metrics", "moses", "--num-samples", "12", "--no-baselines",
                         "--device", "cpu", "--out", str(tmp_path / "e" / "moses.json"))
    assert code == 0, err
    assert "CharRNN (MOSES)" in out and "smiles-lstm" in out
    result = json.loads((tmp_path / "e" / "moses.json").read_text())
    assert result["rows"]["smiles-lstm"]["valid"] >= 0 and (tmp_path / "e" / "moses_properties.png").exists()


def test_moses_metrics_on_a_non_smiles_model_fail_in_one_line(capsys, vae_run):
    code, _, err = run(capsys, "eval", str(vae_run), "--metrics", "moses", "--device", "cpu")
    assert code == 2 and one_line_error(err) and "SMILES model" in err

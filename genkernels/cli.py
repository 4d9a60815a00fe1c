"""The `genkernels` command: train, sample, eval, info, bench.

    genkernels train vae                      # CPU-friendly defaults, writes runs/vae/
    genkernels train gan --steps 500 --out runs/gan-short
    genkernels train vae --resume             # continue runs/vae/checkpoint
    genkernels sample runs/vae -n 64          # runs/vae/samples/samples.png (+ the model's figures)
    genkernels sample runs/gpt --prompt "def fib(n):"   # streams the continuation to stdout
    genkernels eval runs/vae --split test     # JSON metrics on stdout
    torchrun --nproc_per_node 2 -m genkernels train vae   # data-parallel
    genkernels info | genkernels bench ...    # environment report / kernel benchmarks
    genkernels stylize photo.jpg painting.jpg --out out.png --size 256   # neural style transfer

Errors the user can fix (unknown model or data, bad flag or value, missing or mismatched
checkpoint) print one line on stderr and exit non-zero; set GENKERNELS_DEBUG=1 to see the traceback
instead. The CLI holds no per-family code: models fit themselves to the data
(`config_for_data`), return their figures (`figures`) and name their sampling keywords.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from genkernels import __version__

# Subcommands implemented elsewhere: argv after the name goes to <module>.main(argv).
_DELEGATED = {"info": "genkernels.info", "bench": "genkernels.bench"}

# TrainConfig fields settable from `genkernels train` flags (flag = field with "-" for "_").
_TRAIN_FLAGS = ("steps", "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio",
                "grad_clip", "precision", "ema_decay", "eval_every", "eval_max_items", "log_every",
                "sample_every", "checkpoint_every", "compile", "device", "seed", "num_workers",
                "num_samples", "progress", "skip_nonfinite", "keep_best", "patience", "strategy")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(ValueError):
    """A mistake in the command line found after parsing; reported in one line."""


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse reports anything else in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- parser ----------------------------------------------------------------------------------
def _model_names() -> str:
    from genkernels.models import REGISTRY

    return ", ".join(sorted(REGISTRY)) or "none registered yet"


def _conditions_of(model_class) -> str:
    names = model_class.sample_conditions()
    return ", ".join(names) if names else "none"


def _conditions_help() -> str:
    """Each registered family's sampling keywords; imports the models, so built only for --help."""
    from genkernels.models import REGISTRY, get_model_class

    lines = ["--condition keys by model:"]
    for name in sorted(REGISTRY):
        try:
            lines.append(f"  {name}: {_conditions_of(get_model_class(name))}")
        except Exception as error:  # a broken family must not break --help
            lines.append(f"  {name}: (cannot import: {error})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from genkernels.train.config import PRECISIONS, TrainConfig

    defaults = TrainConfig()
    parser = _Parser(prog="genkernels", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Run `genkernels COMMAND --help` for the options of a command.")
    parser.add_argument("--version", action="version", version=f"genkernels {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="train a model, write samples.png, loss.png, metrics.json, checkpoint/",
        description="Train MODEL and write, under --out: samples.png (sample grid, EMA weights), "
                    "loss.png (train/val loss curves), metrics.json (final train and eval metrics), "
                    "metrics.jsonl (every log line), checkpoint/ (safetensors + JSON, resumable) "
                    "and the model's own figures. Options left unset take the model's preferred "
                    "values (its train_defaults), then the TrainConfig defaults shown.")
    train.add_argument("model", help=f"model family: {_model_names()}")
    train.add_argument("--data", metavar="NAME|PATH",
                       help="dataset name (genkernels.data.DATASETS) or path; default: the model's default_data")
    train.add_argument("--out", metavar="DIR", help="output directory (default: runs/MODEL)")
    train.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                       help="continue a run: from CHECKPOINT, or OUT/checkpoint when no path is given; "
                            "the saved train config is reused and flags you pass override it")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="model_options",
                       help="model config field (repeatable), e.g. --set latent_dim=16")
    hyper = train.add_argument_group("optimisation")
    hyper.add_argument("--steps", type=int, help=f"optimizer steps (default {defaults.steps})")
    hyper.add_argument("--batch-size", type=int, help=f"global batch size (default {defaults.batch_size})")
    hyper.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    hyper.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {defaults.weight_decay})")
    hyper.add_argument("--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"),
                       help=f"AdamW betas (default {defaults.betas[0]} {defaults.betas[1]})")
    hyper.add_argument("--warmup-steps", type=int, help=f"linear warm-up steps (default {defaults.warmup_steps})")
    hyper.add_argument("--min-lr-ratio", type=float,
                       help=f"final lr / peak lr of the cosine decay (default {defaults.min_lr_ratio})")
    hyper.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 = off (default {defaults.grad_clip})")
    hyper.add_argument("--ema-decay", type=float, help=f"weight EMA decay, 0 = off (default {defaults.ema_decay})")
    hyper.add_argument("--precision", choices=PRECISIONS, help=f"autocast precision (default {defaults.precision})")
    hyper.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the loss")
    hyper.add_argument("--seed", type=int, help=f"seed of weights, data order and noise (default {defaults.seed})")
    runtime = train.add_argument_group("runtime and logging")
    runtime.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default {defaults.device})")
    runtime.add_argument("--strategy", choices=("ddp", "fsdp"),
                         help="under torchrun: ddp (whole model per rank) or fsdp (FSDP2, parameters, "
                              f"gradients and optimizer state sharded per block) (default {defaults.strategy})")
    runtime.add_argument("--num-workers", type=int, help=f"DataLoader workers (default {defaults.num_workers})")
    runtime.add_argument("--eval-every", type=int,
                         help=f"steps between evaluations, 0 = only at the end (default {defaults.eval_every})")
    runtime.add_argument("--eval-max-items", type=int,
                         help=f"validation items per evaluation (default {defaults.eval_max_items})")
    runtime.add_argument("--log-every", type=int, help=f"steps between log lines (default {defaults.log_every})")
    runtime.add_argument("--sample-every", type=int,
                         help=f"steps between sample grids in OUT/samples/, 0 = off (default {defaults.sample_every})")
    runtime.add_argument("--checkpoint-every", type=int,
                         help=f"steps between checkpoints, 0 = only at the end (default {defaults.checkpoint_every})")
    runtime.add_argument("--keep-best", action=argparse.BooleanOptionalAction,
                         help="save the best-on-validation checkpoint to OUT/best, which eval then uses (default on)")
    runtime.add_argument("--patience", type=int, help="stop after this many evaluations without a new best (default: never)")
    runtime.add_argument("--num-samples", type=int, help=f"images in sample grids (default {defaults.num_samples})")
    runtime.add_argument("--progress", action=argparse.BooleanOptionalAction, help="show a progress bar")
    runtime.add_argument("--skip-nonfinite", action=argparse.BooleanOptionalAction,
                         help="skip (and count) steps whose loss is NaN or inf instead of stopping "
                              "with an error (default: stop)")
    train.set_defaults(handler=_train)

    sample = commands.add_parser(
        "sample", help="draw samples from a checkpoint",
        description="Draw samples from a trained model and write, under --out (a directory): "
                    "samples.png, the model's other figures (rewritten on every run) and "
                    "samples.safetensors (the raw tensor).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("checkpoint", help="checkpoint directory, or a run directory holding checkpoint/")
    sample.add_argument("-n", "--num-samples", type=_positive_int,
                        help="number of samples (default 64, or 1 with --prompt)")
    sample.add_argument("--out", metavar="DIR", help="output directory (default: RUN/samples)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sample.add_argument("--nrow", type=_positive_int, help="images per grid row (default: the model's choice)")
    sample.add_argument("--live-weights", action="store_true", help="use the live weights instead of the EMA")
    sample.add_argument("--condition", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword for model.sample (repeatable, Python literal values), "
                             "e.g. --condition temperature=0.8; the keys of each model are listed below")
    text = sample.add_argument_group(
        "text families (gpt)", "--prompt streams the first sample's text to stdout as the tokens come\n"
        "(the summary line goes to stderr); every sample is written to samples.txt. These\n"
        "flags set the sample keywords of the same names: a family without them refuses them.")
    text.add_argument("--prompt", metavar="TEXT", help="continue TEXT, e.g. --prompt 'def fib(n):'")
    text.add_argument("--max-new-tokens", type=_positive_int, metavar="N",
                      help="tokens generated per sample (default: fill the context)")
    text.add_argument("--temperature", type=float, metavar="T",
                      help="softmax temperature, 0 = greedy (default: the model's, 1 for gpt)")
    text.add_argument("--top-k", type=_positive_int, metavar="K", help="sample among the K most likely tokens only")
    text.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling: the smallest set of mass >= P")
    sample.set_defaults(handler=_sample)
    sample_help = sample.format_help

    def sample_help_with_conditions() -> str:  # the keys need the models imported: only for --help
        sample.epilog = _conditions_help()
        return sample_help()

    sample.format_help = sample_help_with_conditions

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on a dataset split",
        description="Compute the mean losses (for families whose held-out loss means something) "
                    "and the model's metrics on a dataset split; print them as JSON (and write --out FILE).")
    evaluate.add_argument("checkpoint", help="checkpoint directory, or a run directory holding checkpoint/")
    evaluate.add_argument("--data", metavar="NAME|PATH", help="dataset (default: the one it was trained on)")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"),
                          help="dataset split (default test)")
    evaluate.add_argument("--max-items", type=_positive_int, help="evaluate on at most this many items (default: all)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256,
                          help="batch size of the loss pass (default 256)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of any sampling the metrics do (default 0)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--out", metavar="FILE", help="also write the JSON here")
    evaluate.add_argument("--live-weights", action="store_true", help="use the live weights instead of the EMA")
    evaluate.add_argument("--metrics", default="model", choices=("model", "moses"),
                          help="model: the family's losses and metrics on the split (default); moses: sample "
                               "--num-samples molecules from a SMILES model and print the MOSES table beside the "
                               "published rows and baselines (needs genkernels[chem])")
    evaluate.add_argument("--num-samples", type=_positive_int, default=30_000,
                          help="--metrics moses: molecules to sample (default 30000, as MOSES)")
    evaluate.add_argument("--no-baselines", action="store_true",
                          help="--metrics moses: skip the train-sample and n-gram baseline rows")
    evaluate.add_argument("--n-jobs", type=_positive_int, default=1, help="--metrics moses: RDKit worker processes")
    evaluate.set_defaults(handler=_eval)

    stylize = commands.add_parser(
        "stylize", help="neural style transfer of one image (Gatys optimisation)",
        description="Repaint CONTENT in the style of STYLE by optimising its pixels against the Gram "
                    "matrices of a fixed random-filter CNN (genkernels.models.style_transfer.stylize) "
                    "and write the result to --out.")
    stylize.add_argument("content", help="content image file (any format Pillow reads)")
    stylize.add_argument("style", help="style image file")
    stylize.add_argument("--out", default="stylized.png", metavar="FILE", help="output image (default stylized.png)")
    stylize.add_argument("--size", type=_positive_int, default=256, help="longer side of the result (default 256)")
    stylize.add_argument("--steps", type=_positive_int, default=200, help="optimisation steps (default 200)")
    stylize.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                         help="adam, or lbfgs (a line search: several evaluations per step) (default adam)")
    stylize.add_argument("--style-weight", type=float, default=10.0,
                         help="weight of the Gram loss, relative to the style's own (default 10)")
    stylize.add_argument("--content-weight", type=float, default=1.0,
                         help="weight of the feature loss, relative to the content's own (default 1)")
    stylize.add_argument("--tv-weight", type=float, default=0.05, help="total variation weight (default 0.05)")
    stylize.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    stylize.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    stylize.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    stylize.set_defaults(handler=_stylize)

    commands.add_parser("info", add_help=False, help="environment, backends and kernels report "
                        "(`genkernels info --help`)")
    commands.add_parser("bench", add_help=False, help="benchmark kernels against their references "
                        "(`genkernels bench --help`)")
    return parser


# -- train -----------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    """Python literal when it parses (16, 1e-3, (64, 64), True), a float for nan / inf (so the
    config can say why it refuses them), else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _model_overrides(model_class, options: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE options as config fields (values parsed as Python literals)."""
    fields = {f.name for f in dataclasses.fields(model_class.config_class)} \
        if dataclasses.is_dataclass(model_class.config_class) else set()
    values = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {option!r}")
        if key not in fields:
            raise UsageError(f"--set {key}: {model_class.name} config has no field {key!r}; "
                             f"fields: {', '.join(sorted(fields))}")
        values[key] = _parse_value(text)
    return values


def _model_for_data(model_class, options: Sequence[str], dataset, data_name):
    """A fresh model fitted to the data by its family (`config_for_data`); --set values win."""
    overrides = _model_overrides(model_class, options)
    return model_class(model_class.config_for_data(dataset, overrides, data_name=str(data_name)))


def _train_config(args, model_class, base: Optional[dict[str, Any]], out_dir: Path):
    from genkernels.train.config import TrainConfig

    values = dict(base) if base is not None else dict(model_class.train_defaults)
    for name in _TRAIN_FLAGS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values["out_dir"] = str(out_dir)
    return TrainConfig.from_dict(values)


def _load_data(name: str, split: str):
    from genkernels.data import get_dataset

    return get_dataset(name, split)


def _prepared(model, dataset):
    """The dataset in the model's own tokens (`prepare_dataset`, e.g. a BPE GPT encoding byte text)."""
    prepare = getattr(model, "prepare_dataset", None)
    return prepare(dataset) if callable(prepare) else dataset


def _train(args) -> int:
    import torch

    from genkernels.models import get_model_class
    from genkernels.train import Trainer, distributed, load_checkpoint

    model_class = get_model_class(args.model)
    out_dir = Path(args.out or Path("runs") / args.model)
    checkpoint = None
    if args.resume:
        resume_path = out_dir / "checkpoint" if args.resume == "auto" else Path(args.resume)
        if args.resume == "auto" and not resume_path.exists():
            raise UsageError(f"--resume: no checkpoint at {resume_path}; pass its path or the right --out")
        checkpoint = load_checkpoint(resume_path, weights_only=True)
        if checkpoint.model_name != args.model:
            raise UsageError(f"--resume: {checkpoint.path} holds a {checkpoint.model_name!r} model, not {args.model!r}")
        if args.model_options:
            raise UsageError("--set cannot change the model config of a resumed run")
        if args.out is None:  # keep writing where the resumed run wrote
            saved = checkpoint.train_config.get("out_dir")
            out_dir = (checkpoint.path.parent if checkpoint.path.name == "checkpoint" or not saved
                       else Path(saved))
    train_config = _train_config(args, model_class, checkpoint and checkpoint.train_config, out_dir)
    data = args.data or (checkpoint and checkpoint.meta.get("metadata", {}).get("data")) or model_class.default_data
    train_set, val_set = _load_data(data, "train"), _load_data(data, "val")

    torch.manual_seed(train_config.seed)  # the initial weights
    model = (model_class.from_config_dict(checkpoint.model_config) if checkpoint
             else _model_for_data(model_class, args.model_options, train_set, data))
    train_set, val_set = _prepared(model, train_set), _prepared(model, val_set)  # BPE: token windows
    model.check_dataset(train_set, data)  # a resumed model meeting other data, say
    try:
        trainer = Trainer(model, train_set, val_set, train_config, metadata={"data": str(data)})
        if checkpoint is not None:
            trainer.resume(checkpoint.path)
        elif trainer.is_main and (out_dir / "metrics.jsonl").exists():
            (out_dir / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
        trainer.fit()
        if trainer.is_main:
            written = _write_run_outputs(trainer, out_dir, data)
            print(f"genkernels train: {args.model} on {data}, {trainer.step} steps -> {out_dir}/ "
                  f"({', '.join(written)})")
        return 0
    finally:
        distributed.cleanup()


def _write_samples(model, samples, out_dir: Path, nrow: Optional[int] = None) -> list[str]:
    """The model's figures (samples.png and the family's own), written afresh: a figure of an
    earlier run or checkpoint is never left standing beside new ones. Returns the file names."""
    from genkernels.figures import save_figures

    written = [Path(p).name for p in save_figures(model.figures(samples, nrow=nrow), out_dir)]
    out_dir.mkdir(parents=True, exist_ok=True)  # a family with no figures (text) still writes its files
    for name, data in model.sample_files(samples).items():  # non-image outputs (samples.wav)
        (out_dir / name).write_bytes(data)
        written.append(name)
    return written


def _write_run_outputs(trainer, out_dir: Path, data: str) -> list[str]:
    from genkernels.figures import plot_loss_curve

    written = _write_samples(trainer.model, trainer.sample(trainer.config.num_samples), out_dir)
    plot_loss_curve(trainer.history, out_dir / "loss.png", units=trainer.model.metric_units)
    last = {kind: next((e for e in reversed(trainer.history) if e["kind"] == kind), {}) for kind in ("train", "eval")}
    summary = {"model": trainer.model.name, "data": data, "step": trainer.step,
               "train": last["train"], "eval": last["eval"], "best": trainer.best_entry()}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return sorted(set(written)) + ["loss.png", "metrics.json", "metrics.jsonl", "checkpoint/"]


# -- sample / eval ---------------------------------------------------------------------------
def _run_dir(checkpoint_path: Path) -> Path:
    return checkpoint_path.parent if checkpoint_path.name == "checkpoint" else checkpoint_path


def _load_for_inference(args):
    from genkernels.train.checkpoint import _resolve, load_model
    from genkernels.train.trainer import resolve_device

    device = resolve_device(args.device)
    path = _resolve(args.checkpoint)
    return path, device, load_model(path, ema=not args.live_weights, map_location=device)


# the text flags of `genkernels sample` and the sample keywords they set
_TEXT_FLAGS = {"prompt": "--prompt", "max_new_tokens": "--max-new-tokens", "temperature": "--temperature",
               "top_k": "--top-k", "top_p": "--top-p"}


class _TextStream:
    """stream(step, tokens) callback of GPT.generate: writes sequence 0's new tokens to `out` as
    text as they come. Token ids become bytes through the model's tokenizer (`token_bytes`) when it
    has one, else they are bytes; an incremental UTF-8 decoder holds back an incomplete multi-byte
    character until its last byte arrives (invalid bytes print as U+FFFD)."""

    def __init__(self, model, out):
        import codecs

        tokenizer = getattr(model, "tokenizer", None)
        self.token_bytes = getattr(tokenizer, "token_bytes", None) or (lambda t: bytes([t]) if t < 256 else b"")
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.out = out

    def __call__(self, step, tokens) -> None:
        token = int(tokens[0])
        if token >= 0:  # -1: sequence 0 has already stopped
            self.write(self.decoder.decode(self.token_bytes(token)))

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()

    def close(self) -> None:
        self.write(self.decoder.decode(b"", final=True) + "\n")


def _streaming_generate(model, stream):
    """Context in which model.generate(...) passes `stream` (model.sample calls generate, so the
    samples and samples.txt are exactly those of a plain `sample` call)."""
    import contextlib

    @contextlib.contextmanager
    def context():
        generate = model.generate
        model.generate = lambda *args, **kwargs: generate(*args, **{"stream": stream, **kwargs})
        try:
            yield
        finally:
            del model.generate  # the instance attribute; the method shows through again
    return context()


def _sample(args) -> int:
    import contextlib
    import inspect

    import torch
    from safetensors.torch import save_file

    from genkernels.train.trainer import seed_everything

    conditions = {}
    for option in args.condition:
        key, sep, text = option.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--condition expects KEY=VALUE, got {option!r}")
        conditions[key] = _parse_value(text)
    text_options = {key: getattr(args, key) for key in _TEXT_FLAGS if getattr(args, key, None) is not None}
    both = sorted(set(text_options) & set(conditions))
    if both:
        raise UsageError(f"{_TEXT_FLAGS[both[0]]} and --condition {both[0]}=... both given; pass one")
    path, device, model = _load_for_inference(args)
    valid = model.sample_conditions()
    for key in text_options:
        if key not in valid:
            what = "take a text prompt" if key == "prompt" else f"take {_TEXT_FLAGS[key]}"
            raise UsageError(f"{_TEXT_FLAGS[key]}: {model.name} does not {what} (its sample takes "
                             f"{', '.join(valid) if valid else 'no conditions'})")
    unknown = sorted(set(conditions) - set(valid))
    if unknown:
        raise UsageError(f"--condition {', '.join(unknown)}: {model.name} sample takes "
                         f"{', '.join(valid) if valid else 'no conditions'}")
    conditions.update(text_options)
    num_samples = args.num_samples or (1 if "prompt" in text_options else 64)
    stream = None
    generate = getattr(model, "generate", None)
    if "prompt" in text_options and callable(generate) and "stream" in inspect.signature(generate).parameters:
        stream = _TextStream(model, sys.stdout)
    seed_everything(args.seed)
    with torch.no_grad(), (_streaming_generate(model, stream) if stream else contextlib.nullcontext()):
        try:
            if stream is not None:
                stream.write(text_options["prompt"])
            samples = model.sample(num_samples, **conditions).detach().float().cpu()
        except TypeError as error:
            if not conditions:
                raise
            raise UsageError(f"--condition {sorted(conditions)}: {error}") from error
        finally:
            if stream is not None:
                stream.close()
    out_dir = Path(args.out) if args.out else _run_dir(path) / "samples"
    written = _write_samples(model, samples, out_dir, args.nrow)
    save_file({"samples": samples.contiguous()}, str(out_dir / "samples.safetensors"))
    print(f"genkernels sample: {num_samples} samples of {model.name} -> {out_dir}/ "
          f"({', '.join(sorted(set(written)) + ['samples.safetensors'])})",
          file=sys.stderr if stream is not None else sys.stdout)
    return 0


def _eval(args) -> int:
    import torch

    from genkernels.train.checkpoint import load_checkpoint
    from genkernels.train.trainer import seed_everything, validation_losses

    if (Path(args.checkpoint) / "best" / "trainer.json").exists():  # a run: its best checkpoint
        args.checkpoint = str(Path(args.checkpoint) / "best")
    path, device, model = _load_for_inference(args)
    meta = load_checkpoint(path, weights_only=True).meta
    if args.metrics == "moses":
        return _eval_moses(args, model, path, meta, device)
    data = args.data or meta.get("metadata", {}).get("data") or model.default_data
    dataset = _prepared(model, _load_data(data, args.split))
    model.check_dataset(dataset, data)
    seed_everything(args.seed)
    groups = list(model.optimizer_groups())
    model.eval()
    with torch.no_grad():
        own_pass = model.reports_validation_loss and not model.evaluate_reports_loss
        losses = (validation_losses(model, dataset, batch_size=args.batch_size, max_items=args.max_items,
                                    device=device, groups=groups if len(groups) > 1 else None)
                  if own_pass else {})
        metrics = model.evaluate(dataset, max_items=args.max_items)
        if model.evaluate_reports_loss:  # one pass over the split: the loss comes with the metrics
            losses = {"loss": float(metrics.pop("loss"))}
    result = {"model": model.name, "checkpoint": str(path), "step": meta["step"], "data": str(data),
              "split": args.split, "losses": losses, "metrics": {k: float(v) for k, v in metrics.items()}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def _eval_moses(args, model, path: Path, meta: dict, device) -> int:
    """`eval --metrics moses`: the MOSES table of a SMILES model's samples, figures beside the JSON."""
    from genkernels.figures import save_figures
    from genkernels.molecules import BASELINES, moses_report, sample_figures

    if not callable(getattr(model, "sample_smiles", None)):
        raise UsageError(f"--metrics moses needs a SMILES model (smiles-lstm, smiles-gpt, smiles-vae), "
                         f"not {model.name!r}")
    model.eval()
    report = moses_report(model, args.num_samples, baselines=() if args.no_baselines else BASELINES,
                          seed=args.seed, n_jobs=args.n_jobs, device=str(device),
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report["table"])
    out_dir = Path(args.out).parent if args.out else _run_dir(path)
    from genkernels.data.smiles import load_moses_smiles

    figures = sample_figures(report["generated"][:10_000],
                             reference={"MOSES test (5000)": load_moses_smiles("test")[:5000]})
    written = save_figures({f"moses_{name}": figure for name, figure in figures.items()}, out_dir)
    result = {"model": model.name, "checkpoint": str(path), "step": meta["step"], "num_samples": args.num_samples,
              "seconds": report["seconds"], "rows": report["rows"]}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "moses_samples.smi").write_text("\n".join(report["generated"]) + "\n")
    print(f"genkernels eval: wrote {', '.join(str(p) for p in written)} and {out_dir / 'moses_samples.smi'}"
          + (f" and {args.out}" if args.out else ""))
    return 0


def _stylize(args) -> int:
    import time

    from genkernels.models.style_transfer import stylize_files
    from genkernels.train.trainer import resolve_device

    start = time.perf_counter()
    result = stylize_files(args.content, args.style, args.out, steps=args.steps, size=args.size,
                           optimizer=args.optimizer, style_weight=args.style_weight,
                           content_weight=args.content_weight, tv_weight=args.tv_weight, seed=args.seed,
                           device=resolve_device(args.device), progress=args.progress)
    first, last = result.history[0], result.history[-1]
    print(f"genkernels stylize: {args.out} ({result.image.shape[2]}x{result.image.shape[1]}, {args.steps} steps, "
          f"{time.perf_counter() - start:.1f} s; style loss {first['style']:.4g} -> {last['style']:.4g}, "
          f"content loss {last['content']:.4g})")
    return 0


# -- delegated subcommands -------------------------------------------------------------------
def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    module_name = _DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        module = None
    if not hasattr(module, "main"):
        print(f"genkernels {command}: error: {module_name} is not available in this installation",
              file=sys.stderr)
        return 1
    return int(module.main(argv) or 0)


# -- entry point -----------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the genkernels command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _DELEGATED:
            return _delegate(argv[0], argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit:  # --help, --version or a parse error (already reported)
            return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 2
        return args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        if os.environ.get("GENKERNELS_DEBUG"):
            raise
        command = argv[0] if argv else ""
        message = " ".join(str(error).split())
        print(f"genkernels {command}: error: {message}".replace("  ", " "), file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    except KeyboardInterrupt:
        print("genkernels: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

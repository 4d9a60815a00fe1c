"""Shared pieces of the SMILES language models (SmilesLSTM "smiles-lstm", SmilesGPT "smiles-gpt").

Tokens are genkernels.data.smiles.SmilesTokenizer's (PAD 0, BOS 1, EOS 2, UNK 3, then the SMILES
tokens); a dataset item is a row [BOS, s_1, ..., s_k, EOS, PAD, ...] of the dataset's max_len.

Property conditioning (MOSES-style CharRNN / GPT with prefix tokens). Each property of
PROPERTY_NAMES (QED, logP, SA; the columns of SmilesDataset.properties) is cut into `cond_bins`
quantile bins fitted on the training molecules (`SmilesConditioner.fit`; the interior edges go into
the config, so a checkpoint carries them). The condition tokens sit after the tokenizer's vocab:
for each property its bins, then its "<prop_any>" token:

    ids  V + [<qed_0> .. <qed_{b-1}>, <qed_any>, <logp_0> .., <logp_any>, <sa_0> .., <sa_any>]

A molecule's sequence is [<qed_i>, <logp_j>, <sa_k>, BOS, s_1, ..., EOS]; while training each
property token becomes its "any" token with probability cond_dropout, so one model samples both
unconditionally (all "any") and given any subset of the targets. The prefix and BOS are inputs
only: the loss counts the SMILES tokens and EOS, exactly the tokens an unconditional model
predicts, so the NLL per token of both compare.

`SmilesLanguageModel` is the common GenerativeModel of the two families: pad-masked next-token
loss (genkernels.ops.linear_cross_entropy with ignore_index), sampling (`sample_smiles`, a loop
that stops as soon as every row has emitted EOS; only SMILES tokens are drawn, never PAD / BOS /
UNK or a condition token), decoding, `evaluate` (NLL per token on the split, validity / uniqueness
and mean properties of sampled molecules when RDKit is installed), `figures` (an RDKit grid with
QED legends), `sample_files` ("samples.smi") and the data fitting (`config_for_data`,
`prepare_dataset`, `check_dataset`). A family supplies the network: `_hidden`, `_head` and
`_start_generation` (see their docstrings).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import weakref
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from genkernels.models._validate import check_bool, check_int, check_real, evaluation_count
from genkernels.models.base import GenerativeModel
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

PROPERTY_NAMES = ("qed", "logp", "sa")  # = genkernels.chem.PROPERTY_NAMES, the SmilesDataset.properties columns
PREFIX_LENGTH = len(PROPERTY_NAMES)
PAD, BOS, EOS, UNK = 0, 1, 2, 3  # SmilesTokenizer's special ids
IGNORE = -100  # linear_cross_entropy's ignore_index: prefix, BOS and PAD targets
_INSTALL = 'pip install "genkernels[chem]" && pip install --no-deps molsets'


# -- property conditioning ---------------------------------------------------------------------------
class SmilesConditioner:
    """Quantile bins of the conditioning properties and their prefix tokens.

    edges   {"qed": [e_1, ..., e_{b-1}], "logp": [...], "sa": [...]}: each property's interior bin
            edges, increasing (b - 1 edges give b bins: value < e_1 is bin 0, value >= e_{b-1} bin b - 1)
    offset  the id of the first condition token (the tokenizer's vocab_size)
    """

    def __init__(self, edges: dict[str, Sequence[float]], *, offset: int = 0):
        if not isinstance(edges, dict):
            raise TypeError(f"edges must be a dict of property name -> bin edges, got {type(edges).__name__}")
        if set(edges) != set(PROPERTY_NAMES):
            raise ValueError(f"edges must have the keys {PROPERTY_NAMES}, got {tuple(edges)}")
        self.offset = check_int("offset", offset, 0)
        self.edges: dict[str, list[float]] = {}
        for name in PROPERTY_NAMES:
            values = edges[name]
            if not isinstance(values, (list, tuple, np.ndarray)) or any(
                    isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) for v in values):
                raise ValueError(f"edges[{name!r}] must be a list of finite numbers, got {values!r:.80}")
            values = [float(v) for v in values]
            if any(b < a for a, b in zip(values, values[1:])):
                raise ValueError(f"edges[{name!r}] must be non-decreasing, got {values}")
            self.edges[name] = values
        self.bins = {name: len(self.edges[name]) + 1 for name in PROPERTY_NAMES}
        starts, start = [], self.offset
        for name in PROPERTY_NAMES:  # each property's bins, then its "any" token
            starts.append(start)
            start += self.bins[name] + 1
        self._starts = torch.tensor(starts, dtype=torch.int64)  # (3,) id of each property's bin 0
        self.num_tokens = start - self.offset
        self.any_ids = self._starts + torch.tensor([self.bins[n] for n in PROPERTY_NAMES])  # (3,)

    @classmethod
    def fit(cls, properties, bins: int, *, offset: int = 0) -> "SmilesConditioner":
        """Quantile edges of each column of properties (N, 3) [qed, logp, sa] (NaN rows ignored) for
        `bins` bins per property."""
        bins = check_int("bins", bins, 1)
        props = np.asarray(properties, dtype=np.float64)
        if props.ndim != 2 or props.shape[1] != PREFIX_LENGTH:
            raise ValueError(f"properties must be an (N, {PREFIX_LENGTH}) array [{', '.join(PROPERTY_NAMES)}], "
                             f"got shape {props.shape}")
        edges = {}
        for j, name in enumerate(PROPERTY_NAMES):
            column = props[:, j][np.isfinite(props[:, j])]
            if column.size == 0:
                raise ValueError(f"properties has no finite {name} values to fit bins to")
            edges[name] = np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]).tolist()
        return cls(edges, offset=offset)

    def token_names(self) -> list[str]:
        """The condition tokens' names in id order: "<qed_0>", ..., "<qed_any>", "<logp_0>", ..."""
        return [f"<{name}_{b}>" for name in PROPERTY_NAMES for b in [*range(self.bins[name]), "any"]]

    def bin_ids(self, props: torch.Tensor) -> torch.Tensor:
        """props (B, 3) float -> condition token ids (B, 3) int64; a NaN entry gets its "any" token."""
        props = props.detach().to("cpu", torch.float64)
        ids = torch.empty(props.shape, dtype=torch.int64)
        for j, name in enumerate(PROPERTY_NAMES):
            edges = torch.tensor(self.edges[name], dtype=torch.float64)
            column = props[:, j]
            bins = torch.bucketize(column.nan_to_num(0.0), edges, right=True)  # edges <= value
            ids[:, j] = torch.where(column.isnan(), self.any_ids[j], self._starts[j] + bins)
        return ids

    def prefix(self, props: torch.Tensor | None, drop_p: float = 0.0, *, n: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The prefix tokens (B, 3) int64 on the CPU: the bins of props (B, 3) (NaN: "any"), each
        replaced by its "any" token with probability drop_p; props None: n rows of "any" tokens."""
        drop_p = check_real("drop_p", drop_p, 0.0)
        if drop_p > 1.0:
            raise ValueError(f"drop_p must lie in [0, 1], got {drop_p}")
        if props is None:
            n = check_int("n", n, 1) if n is not None else 1
            return self.any_ids.expand(n, PREFIX_LENGTH).clone()
        if not isinstance(props, torch.Tensor) or props.dim() != 2 or props.shape[1] != PREFIX_LENGTH:
            got = tuple(props.shape) if isinstance(props, torch.Tensor) else type(props).__name__
            raise ValueError(f"props must be a (B, {PREFIX_LENGTH}) tensor [{', '.join(PROPERTY_NAMES)}], got {got}")
        ids = self.bin_ids(props)
        if drop_p > 0:
            drop = torch.rand(ids.shape, generator=generator) < drop_p
            ids = torch.where(drop, self.any_ids.expand_as(ids), ids)
        return ids

    def targets(self, n: int, **values) -> torch.Tensor:
        """Target properties (n, 3) float64 (NaN: "any") from keywords qed= / logp= / sa=, each None,
        a number (for all n) or a sequence / tensor of n numbers."""
        props = torch.full((n, PREFIX_LENGTH), float("nan"), dtype=torch.float64)
        for j, name in enumerate(PROPERTY_NAMES):
            value = values.get(name)
            if value is not None:
                props[:, j] = _target_column(name, value, n)
        return props

    def describe(self) -> dict[str, list[str]]:
        """Each property's bins as readable ranges, e.g. {"qed": ["< 0.71", "0.71 .. 0.81", ">= 0.81"]}."""
        out = {}
        for name in PROPERTY_NAMES:
            e = self.edges[name]
            out[name] = ([f"< {e[0]:.3g}"] + [f"{a:.3g} .. {b:.3g}" for a, b in zip(e, e[1:])] + [f">= {e[-1]:.3g}"]
                         if e else ["all"])
        return out


def _target_column(name: str, value, n: int) -> torch.Tensor:
    """One property's targets: a finite number or n finite numbers -> (n,) float64."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {value!r}")
    if isinstance(value, numbers.Real):
        column = torch.full((n,), float(value), dtype=torch.float64)
    else:
        try:
            column = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {value!r:.60}") from error
        if column.numel() == 1:
            column = column.expand(n)
        if column.numel() != n:
            raise ValueError(f"{name} must be one number or {n} numbers (one per sample), got {column.numel()}")
    if not torch.isfinite(column).all():
        raise ValueError(f"{name} must be finite, got {value!r:.60}")
    return column


# -- sampling and decoding -----------------------------------------------------------------------------
def sample_smiles(step_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, max_new_tokens: int, *,
                  num_allowed: int | None = None, banned: Sequence[int] = (PAD, BOS, UNK), eos: int = EOS,
                  pad: int = PAD, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The shared sampling loop: draw up to max_new_tokens tokens per row, stopping as soon as every
    row has emitted EOS.

    step_fn     new tokens (B,) int64 -> logits (B, V) of the token after them (the model feeds
                them through its carried state / KV cache)
    logits      (B, V) logits of the first new token
    num_allowed only ids < num_allowed are drawn (the SMILES vocab; condition tokens never are)
    banned      ids never drawn (PAD, BOS, UNK)
    temperature 0: greedy (argmax), else sample softmax(logits / temperature)
    top_k       keep the k most likely tokens
    Returns (B, L) int64, L <= max_new_tokens: each row's tokens through its EOS, then pad.
    step_fn is not called after the last token (nor once every row has ended).
    """
    from genkernels.models.gpt import _filter_logits

    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    temperature = check_real("temperature", temperature, 0.0)
    if top_k is not None:
        top_k = check_int("top_k", top_k, 1)
    batch, vocab = logits.shape
    mask = torch.zeros(vocab, dtype=torch.bool, device=logits.device)  # True: never drawn
    if num_allowed is not None:
        mask[num_allowed:] = True
    mask[list(banned)] = True
    alive = torch.ones(batch, dtype=torch.bool, device=logits.device)
    out = []
    for step in range(max_new_tokens):
        logits = logits.float().masked_fill(mask, float("-inf"))
        if temperature == 0:
            new = logits.argmax(dim=-1)
        else:
            probs = _filter_logits(logits / temperature, top_k, None).softmax(dim=-1)
            new = torch.multinomial(probs, 1, generator=generator)[:, 0]
        new = torch.where(alive, new, torch.full_like(new, pad))
        out.append(new)
        alive &= new != eos
        if not bool(alive.any()) or step == max_new_tokens - 1:
            break
        logits = step_fn(new)
    if not out:
        return torch.zeros(batch, 0, dtype=torch.int64, device=logits.device)
    return torch.stack(out, dim=1)


def decode_rows(tokenizer, tokens) -> list[str]:
    """Token rows (N, L) (int, or float as the trainer hands samples back) -> N SMILES strings:
    each row decoded up to its EOS; PAD / BOS and condition tokens (ids >= the vocab) are skipped."""
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be token rows (N, L), got shape {tuple(tokens.shape)}")
    rows = tokens.detach().cpu()
    rows = (rows.round() if rows.is_floating_point() else rows).long().tolist()
    vocab = tokenizer.vocab_size
    return [tokenizer.decode([t for t in row if 0 <= t < vocab]) for row in rows]


def _chem():
    """genkernels.chem when RDKit is installed, else None."""
    try:
        from genkernels import chem

        chem.require_rdkit()
        return chem
    except ImportError:
        return None


def molecule_stats(smiles: Sequence[str]) -> dict[str, float]:
    """Validity (RDKit parses it, non-empty), uniqueness among the valid (canonical forms) and the
    mean QED / logP / SA of the valid molecules; {} without RDKit."""
    chem = _chem()
    if chem is None or not smiles:
        return {}
    canonical = [chem.canonical_smiles(s) if s else None for s in smiles]
    valid = [c for c in canonical if c]
    stats = {"valid": len(valid) / len(smiles), "unique": len(set(valid)) / len(valid) if valid else 0.0}
    if valid:
        props = chem.mol_properties(valid)
        for name in PROPERTY_NAMES:
            stats[f"sample_{name}"] = float(np.nanmean(props[name]))
    return stats


# -- the common model ------------------------------------------------------------------------------------
@dataclasses.dataclass
class SmilesConfigMixin:
    """Fields every SMILES language model config has (a dataclass subclass lists its own after them).

    tokenizer_json  the SmilesTokenizer.to_json() (set by config_for_data from the dataset's tokenizer)
    max_len         longest sequence in tokens with BOS and EOS (the dataset's max_len); samples have it
    conditional     condition on QED / logP / SA by prefix tokens (module docstring)
    cond_bins       quantile bins per property
    cond_dropout    probability of replacing each property token by its "any" token in training
    cond_max_items  molecules whose RDKit properties fit the bins and train a conditional model
                    (dataset.with_properties(max_items=...)), computing them for all 1.6M MOSES
                    molecules being too slow
    cond_edges      the fitted interior bin edges {"qed": [...], "logp": [...], "sa": [...]}
    """

    tokenizer_json: str | None = None
    max_len: int = 64
    conditional: bool = False
    cond_bins: int = 4
    cond_dropout: float = 0.2
    cond_max_items: int = 50_000
    cond_edges: dict[str, list[float]] | None = None

    def _check_smiles_fields(self):
        owner = type(self).__name__
        if self.tokenizer_json is not None and not isinstance(self.tokenizer_json, str):
            raise TypeError(f"{owner}.tokenizer_json must be a SmilesTokenizer JSON str or None, got "
                            f"{type(self.tokenizer_json).__name__}")
        self.max_len = check_int(f"{owner}.max_len", self.max_len, 3)
        self.conditional = check_bool(f"{owner}.conditional", self.conditional)
        self.cond_bins = check_int(f"{owner}.cond_bins", self.cond_bins, 1)
        self.cond_dropout = check_real(f"{owner}.cond_dropout", self.cond_dropout, 0.0)
        if self.cond_dropout > 1.0:
            raise ValueError(f"{owner}.cond_dropout must lie in [0, 1], got {self.cond_dropout}")
        self.cond_max_items = check_int(f"{owner}.cond_max_items", self.cond_max_items, 1)
        if self.cond_edges is not None:
            SmilesConditioner(self.cond_edges)  # checks them
            self.cond_edges = {name: [float(v) for v in self.cond_edges[name]] for name in PROPERTY_NAMES}
            if any(len(e) != self.cond_bins - 1 for e in self.cond_edges.values()):
                raise ValueError(f"{owner}.cond_edges must hold cond_bins - 1 = {self.cond_bins - 1} edges per "
                                 f"property, got {[len(e) for e in self.cond_edges.values()]}")
        if self.conditional and self.cond_edges is None:
            raise ValueError(f"{owner}.conditional=True needs cond_edges (the bins fitted on the training "
                             f"properties); build the config with config_for_data(dataset, {{'conditional': True}})")


# datasets with properties already computed for a (dataset, max_items): config_for_data and then
# prepare_dataset on the same training set compute them once
_WITH_PROPERTIES: "weakref.WeakKeyDictionary[Any, dict[int, Any]]" = weakref.WeakKeyDictionary()


def dataset_with_properties(dataset, max_items: int):
    """dataset itself when it has .properties, else dataset.with_properties(max_items=max_items) (memoised)."""
    if getattr(dataset, "properties", None) is not None:
        return dataset
    if not callable(getattr(dataset, "with_properties", None)):
        raise ValueError("a conditional SMILES model needs the molecules' properties: pass a SmilesDataset "
                         "(it has with_properties())")
    try:
        cached = _WITH_PROPERTIES.setdefault(dataset, {})
    except TypeError:  # not weak-referenceable
        cached = {}
    if max_items not in cached:
        cached[max_items] = dataset.with_properties(max_items=max_items)
    return cached[max_items]


class SmilesLanguageModel(GenerativeModel):
    """Autoregressive model over SMILES tokens; see the module docstring. Subclasses implement:

    _hidden(tokens (B, T)) -> (B, T, D)            features of the plain (uncached) forward
    _head() -> (weight (V, D), bias (V,) | None)   the output layer over all V = num_tokens ids
    _start_generation(prompts (B, P)) -> (logits (B, V), step_fn)
        runs the prompts and returns the next-token logits and a step function new tokens (B,)
        -> logits (B, V) that carries the state (LSTM) or KV cache (GPT)
    """

    default_data: ClassVar[str] = "moses"
    data_kinds: ClassVar[tuple[str, ...]] = ("smiles",)
    evaluate_reports_loss: ClassVar[bool] = True  # evaluate() returns the mean NLL as "loss"
    metric_units: ClassVar[dict[str, str]] = {"loss": "nats/token", "nats_per_token": "nats/token",
                                              "bits_per_token": "bits/token"}

    def _init_smiles(self):
        """self.tokenizer, self.conditioner (None when unconditional) and self.num_tokens."""
        from genkernels.data.smiles import SmilesTokenizer

        c, owner = self.config, type(self.config).__name__
        if c.tokenizer_json is None:
            raise ValueError(f"{owner}.tokenizer_json is None: build the config with "
                             f"{type(self).__name__}.config_for_data(dataset), or pass tokenizer_json="
                             f"SmilesTokenizer.to_json()")
        self.tokenizer = SmilesTokenizer.from_json(c.tokenizer_json)
        self.vocab_size = self.tokenizer.vocab_size  # SMILES tokens (the ids samples are drawn from)
        self.conditioner = (SmilesConditioner(c.cond_edges, offset=self.vocab_size) if c.conditional else None)
        self.num_tokens = self.vocab_size + (self.conditioner.num_tokens if self.conditioner else 0)
        self.prefix_length = PREFIX_LENGTH if self.conditioner else 0

    # -- to implement -----------------------------------------------------------------------------------
    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _start_generation(self, prompts: torch.Tensor):
        raise NotImplementedError

    # -- loss -----------------------------------------------------------------------------------------
    def _split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A collated batch (tokens (B, L), or (tokens, props (B, 3))) -> (tokens trimmed to the
        longest row, props or None)."""
        tokens, props = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point() \
                or tokens.dtype == torch.bool:
            got = f"a {tokens.dtype} tensor of shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) \
                else type(tokens).__name__
            raise ValueError(f"batch must be integer token rows (B, L) [BOS ... EOS PAD ...], got {got}")
        tokens = tokens.long()
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"batch tokens must lie in [0, vocab_size = {self.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        longest = int((tokens != PAD).sum(dim=1).max()) if tokens.numel() else 0
        if longest < 2:
            raise ValueError(f"batch rows must hold BOS and at least one more token, got shape {tuple(tokens.shape)}")
        return tokens[:, :longest], props

    def _sequences(self, tokens: torch.Tensor, props: torch.Tensor | None, drop_p: float):
        """tokens (B, T) -> inputs (B, P + T - 1) and targets (B, P + T - 1): the prefix and BOS are
        inputs only (targets IGNORE), as are PAD targets."""
        targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == PAD, IGNORE)
        if self.conditioner is None:
            return tokens[:, :-1], targets
        batch = tokens.shape[0]
        if props is not None and (not isinstance(props, torch.Tensor) or tuple(props.shape) != (batch, PREFIX_LENGTH)):
            got = tuple(props.shape) if isinstance(props, torch.Tensor) else type(props).__name__
            raise ValueError(f"batch properties must be ({batch}, {PREFIX_LENGTH}), got {got}")
        prefix = self.conditioner.prefix(props, drop_p, n=batch).to(tokens.device)  # (B, P)
        inputs = torch.cat([prefix, tokens[:, :-1]], dim=1)
        ignored = torch.full((batch, PREFIX_LENGTH), IGNORE, dtype=torch.int64, device=tokens.device)
        return inputs, torch.cat([ignored, targets], dim=1)

    def _nll(self, batch, drop_p: float = 0.0) -> tuple[torch.Tensor, int]:
        """(mean NLL in nats over the predicted tokens, their count)."""
        tokens, props = self._split_batch(batch)
        inputs, targets = self._sequences(tokens, props, drop_p)
        h = self._hidden(inputs)  # (B, T, D)
        weight, bias = self._head()
        nll = linear_cross_entropy(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1), bias=bias,
                                   ignore_index=IGNORE)
        return nll, int((targets != IGNORE).sum())

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch: token rows (B, L) [BOS ... EOS PAD ...] (with properties (B, 3) for a conditional
        model; without them its prefix is all "any") -> {"loss": NLL in nats per predicted token
        (SMILES tokens and EOS), "bits_per_token"}. Condition dropout in training mode."""
        drop_p = self.config.cond_dropout if self.training else 0.0
        nll, _ = self._nll(batch, drop_p)
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    # -- generation -----------------------------------------------------------------------------------
    def _check_sampling(self, temperature, qed, logp, sa):
        temperature = check_real("temperature", temperature, 0.0)
        given = {name: value for name, value in zip(PROPERTY_NAMES, (qed, logp, sa)) if value is not None}
        if given and self.conditioner is None:
            raise ValueError(f"{', '.join(given)}: this {self.name} model is unconditional (conditional=False); "
                             f"train one with --set conditional=True to give property targets")
        return temperature, given

    def prompts(self, n: int, qed=None, logp=None, sa=None) -> torch.Tensor:
        """The generation prompts (n, P + 1) int64: the condition prefix (conditional models; "any"
        for the properties not given) and BOS."""
        n = check_int("n", n, 1)
        _, given = self._check_sampling(1.0, qed, logp, sa)
        bos = torch.full((n, 1), BOS, dtype=torch.int64)
        if self.conditioner is None:
            return bos
        prefix = self.conditioner.prefix(self.conditioner.targets(n, **given), 0.0)
        return torch.cat([prefix, bos], dim=1)

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, *,
                 top_k: int | None = None, seed: int | None = None, cache: bool = True) -> torch.Tensor:
        """Continue prompts (B, P) by up to max_new_tokens SMILES tokens -> (B, L) new tokens (PAD after
        each row's EOS; stops when every row has ended). cache False re-runs the whole prefix for
        every token (the reference the cached path must equal; greedy with temperature=0)."""
        if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.is_floating_point():
            raise ValueError("prompts must be an integer tensor (B, P)")
        check_bool("cache", cache)
        device = self._head()[0].device
        prompts = prompts.long().to(device)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(check_int("seed", seed))
        if cache:
            logits, step_fn = self._start_generation(prompts)
        else:
            weight, bias = self._head()
            sequence = [prompts]

            def step_fn(new: torch.Tensor | None) -> torch.Tensor:  # whole prefix again, last position
                if new is not None:
                    sequence[0] = torch.cat([sequence[0], new[:, None]], dim=1)
                h = self._hidden(sequence[0])[:, -1]
                return torch.nn.functional.linear(h, weight, bias)

            logits = step_fn(None)
        return sample_smiles(step_fn, logits, max_new_tokens, num_allowed=self.vocab_size, temperature=temperature,
                             top_k=top_k, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, qed=None, logp=None, sa=None,
               seed: int | None = None) -> torch.Tensor:
        """n molecules as token rows (n, max_len) int64 [BOS, s_1, ..., EOS, PAD, ...] (a row that did
        not end within max_len has no EOS). qed / logp / sa: targets of a conditional model (a number,
        or n numbers); the properties not given are "any". temperature 0: greedy."""
        temperature, _ = self._check_sampling(temperature, qed, logp, sa)
        prompts = self.prompts(n, qed=qed, logp=logp, sa=sa)
        new = self.generate(prompts, self.config.max_len - 1, temperature, seed=seed).cpu()
        rows = torch.full((prompts.shape[0], self.config.max_len), PAD, dtype=torch.int64)
        rows[:, 0] = BOS
        rows[:, 1:1 + new.shape[1]] = new
        return rows

    @torch.no_grad()
    def sample_smiles(self, n: int, temperature: float = 1.0, batch_size: int = 512, qed=None, logp=None, sa=None,
                      progress: bool = False, seed: int | None = None) -> list[str]:
        """n sampled SMILES strings (invalid ones included, as drawn), in batches of batch_size; seed
        makes the draws repeatable (batch i uses seed + i)."""
        from tqdm.auto import tqdm

        n, batch_size = check_int("n", n, 1), check_int("batch_size", batch_size, 1)
        check_bool("progress", progress)
        targets = {name: value for name, value in zip(PROPERTY_NAMES, (qed, logp, sa)) if value is not None}
        columns = {name: (None if isinstance(v, numbers.Real) else _target_column(name, v, n))
                   for name, v in targets.items()}
        out: list[str] = []
        with tqdm(total=n, desc="sample", unit="mol", disable=not progress, leave=False) as bar:
            for i, begin in enumerate(range(0, n, batch_size)):
                size = min(batch_size, n - begin)
                values = {name: (targets[name] if columns[name] is None else columns[name][begin:begin + size])
                          for name in targets}
                rows = self.sample(size, temperature, seed=None if seed is None else seed + i, **values)
                out.extend(self.decode(rows))
                bar.update(size)
        return out

    def decode(self, tokens) -> list[str]:
        """Token rows (N, L) -> N SMILES strings (up to each EOS)."""
        return decode_rows(self.tokenizer, tokens)

    # -- evaluation and outputs --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 128, num_samples: int = 256,
                 seed: int = 0) -> dict[str, float]:
        """NLL per predicted token on the split ("loss" = "nats_per_token", "bits_per_token"); with
        RDKit, "valid" / "unique" (among the valid) of num_samples sampled molecules and their mean
        properties (sample_qed, sample_logp, sample_sa)."""
        from torch.utils.data import default_collate

        dataset = self.prepare_dataset(dataset)
        self.check_dataset(dataset)
        count = evaluation_count(dataset, max_items, batch_size)
        num_samples = check_int("num_samples", num_samples, 0)
        device = self._head()[0].device
        nats, tokens = 0.0, 0
        for begin in range(0, count, batch_size):
            batch = default_collate([dataset[i] for i in range(begin, min(count, begin + batch_size))])
            batch = [t.to(device) for t in batch] if isinstance(batch, (list, tuple)) else batch.to(device)
            nll, k = self._nll(batch)
            nats += float(nll) * k
            tokens += k
        metrics = {"loss": nats / tokens, "nats_per_token": nats / tokens, "bits_per_token": nats / tokens / math.log(2)}
        if num_samples:
            metrics.update(molecule_stats(self.sample_smiles(num_samples, seed=seed)))
        return metrics

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"molecules": an RDKit grid of the valid samples (at most 48) with QED legends} with RDKit;
        else (or with no valid sample) {}."""
        chem = _chem()
        if chem is None:
            return {}
        valid = [c for c in (chem.canonical_smiles(s) if s else None for s in self.decode(samples)) if c][:48]
        if not valid:
            return {}
        qed = chem.mol_properties(valid)["qed"]
        return {"molecules": chem.draw_molecules(valid, legends=[f"QED {q:.2f}" for q in qed],
                                                 nrow=nrow or 6)}

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """{"samples.smi": one decoded SMILES per line (an empty line for an empty sample)}."""
        return {"samples.smi": "".join(s + "\n" for s in self.decode(samples)).encode("utf-8")}

    # -- fitting to data ----------------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *, data_name: str | None = None):
        """tokenizer_json and max_len from the SmilesDataset; conditional=True fits the property bins
        on dataset.with_properties(max_items=cond_max_items) (unless cond_edges are given)."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        tokenizer = getattr(dataset, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("the data has no SMILES tokenizer; pass a genkernels.data.smiles.SmilesDataset")
        values.setdefault("tokenizer_json", tokenizer.to_json())
        values.setdefault("max_len", int(dataset.max_len))
        if values.get("conditional") and values.get("cond_edges") is None:
            fields = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
            bins = check_int("cond_bins", values.get("cond_bins", fields["cond_bins"]), 1)
            limit = check_int("cond_max_items", values.get("cond_max_items", fields["cond_max_items"]), 1)
            props = dataset_with_properties(dataset, limit).properties
            values["cond_edges"] = SmilesConditioner.fit(props, bins).edges
        return cls.config_class(**values)

    def prepare_dataset(self, dataset):
        """A conditional model trains on molecules with properties: dataset.with_properties(
        max_items=cond_max_items) unless it has them; anything else is returned as is."""
        if self.conditioner is None or getattr(dataset, "kind", None) != "smiles":
            return dataset
        return dataset_with_properties(dataset, self.config.cond_max_items)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the dataset's tokens are not this model's (another vocabulary)."""
        self.check_data(dataset, data_name)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        tokenizer = getattr(dataset, "tokenizer", None)
        if tokenizer is not None and tokenizer.to_json() != self.tokenizer.to_json():
            raise ValueError(f"{name} was tokenized with another SMILES vocabulary than this {self.name} model's "
                             f"({tokenizer.vocab_size} vs {self.vocab_size} tokens)")


__all__ = ["PROPERTY_NAMES", "SmilesConditioner", "SmilesConfigMixin", "SmilesLanguageModel", "decode_rows",
           "molecule_stats", "sample_smiles"]

"""SmilesLSTM: the CharRNN of MOSES (Segler et al. 2018; Polykovskiy et al. 2020), a token-level LSTM
language model over SMILES, optionally conditioned on QED / logP / SA.

Network:

    tokens (B, T) -> embed (B, T, embed_dim) -> genkernels.nn.LSTM (num_layers, batch_first, dropout
    between layers) -> (B, T, hidden_size) -> dropout -> head (B, T, V)

V counts the SMILES tokens of the config's SmilesTokenizer and, when conditional, the property
prefix tokens (genkernels.models._smiles). Loss: next-token NLL through
genkernels.ops.linear_cross_entropy with ignore_index, so PAD (and the prefix / BOS) targets count
for nothing: nats per predicted token (SMILES tokens and EOS).

Generation runs the prompt ([prefix,] BOS) through the LSTM once, then feeds each new token with the
carried (h, c) of every layer (nothing is recomputed; a conditional model adds the prefix's mean
embedding to every input, see `_run`) and stops once every row has emitted EOS
(genkernels.models._smiles.sample_smiles). `generate(..., cache=False)` re-runs the whole prefix for
every token: the greedy results are equal (tests/models/test_smiles_lstm.py).

MOSES's CharRNN is 3 layers of 768 with dropout 0.2 (embedding = one-hot width), batch 64, Adam 1e-3
for 80 epochs of the 1.6M training molecules (valid 0.975): `--set num_layers=3 --set hidden_size=768
--set dropout=0.2` with --steps in the 10^5-10^6 range (a GPU job). The default here is 2 x 256 so a
step of 128 molecules costs ~0.24 s on 2 idle CPU cores (2 x 512: over 1 s); see train_defaults.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from genkernels.models._smiles import PREFIX_LENGTH, SmilesConfigMixin, SmilesLanguageModel
from genkernels.models._validate import check_int, check_real
from genkernels.nn.lstm import LSTM


@dataclasses.dataclass
class SmilesLSTMConfig(SmilesConfigMixin):
    """The SMILES fields (SmilesConfigMixin: tokenizer_json, max_len, conditional, cond_*) and the
    network: embed_dim, hidden_size x num_layers LSTM, dropout between the layers and before the head."""

    embed_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0

    def __post_init__(self):
        self._check_smiles_fields()
        for name in ("embed_dim", "hidden_size", "num_layers"):
            setattr(self, name, check_int(f"SmilesLSTMConfig.{name}", getattr(self, name), 1))
        self.dropout = check_real("SmilesLSTMConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"SmilesLSTMConfig.dropout must be < 1, got {self.dropout}")


class SmilesLSTM(SmilesLanguageModel):
    """CharRNN over SMILES tokens; see the module docstring."""

    name = "smiles-lstm"
    config_class = SmilesLSTMConfig
    # The default recipe (`genkernels train smiles-lstm`, MOSES train split): 2 x 256 LSTM, batch 128,
    # lr 5e-3 with a short warm-up and cosine decay to 5%, 4500 steps: 21.6 min on 2 idle cores with
    # genkernels._C built (~0.27 s a step plus the evaluations). Measured: valid 0.59 / 0.72 / 0.76 /
    # 0.82 (256 EMA samples at temperature 1) and val 0.641 / 0.602 / 0.593 / 0.578 nats/token at
    # steps 1000 / 2000 / 3000 / 4000 of the 3000- and 4500-step runs; the 4500-step model's MOSES
    # table is in the README (bench/results/cpu_moses_smiles_lstm.json). At batch 64, lr 3e-3 valid
    # was 0.17 after 450 steps.
    train_defaults = {"steps": 4500, "batch_size": 128, "lr": 5e-3, "warmup_steps": 30, "weight_decay": 0.0,
                      "min_lr_ratio": 0.05, "grad_clip": 1.0, "precision": "fp32", "ema_decay": 0.99,
                      "eval_every": 1000, "eval_max_items": 512, "log_every": 50, "num_samples": 48,
                      "checkpoint_every": 200}

    def __init__(self, config: SmilesLSTMConfig | None = None):
        super().__init__(config if config is not None else SmilesLSTMConfig())
        self._init_smiles()
        c = self.config
        self.embed = nn.Embedding(self.num_tokens, c.embed_dim)
        self.lstm = LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True,
                         dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, self.num_tokens)
        # N(0, 1) embeddings (inputs of the LSTM's scale) and forget-gate biases 1 (gates i, f, g, o),
        # as MusicLSTM / CharLSTM found best; a small head starts near the uniform distribution
        nn.init.normal_(self.embed.weight, std=1.0)
        with torch.no_grad():
            for layer in range(c.num_layers):
                getattr(self.lstm, f"bias_ih_l{layer}")[c.hidden_size:2 * c.hidden_size].fill_(1.0)
                getattr(self.lstm, f"bias_hh_l{layer}")[c.hidden_size:2 * c.hidden_size].zero_()
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _head(self):
        return self.head.weight, self.head.bias

    def _run(self, tokens: torch.Tensor, state=None, condition: torch.Tensor | None = None):
        """tokens (B, T) -> (features (B, T, hidden_size), state (h, c) each (num_layers, B, hidden_size)).

        A conditional model also adds `condition` (B, embed_dim), the mean embedding of the prefix
        tokens, to every input: a direct path from the targets to each step, which a 1-layer LSTM
        trained on a few hundred molecules did not learn through the state alone (samples' logP
        moved by < 0.3 between a high and a low target). None: taken from tokens[:, :3]."""
        x = self.embed(tokens)  # (B, T, embed_dim)
        if self.conditioner is not None:
            if condition is None:
                condition = self._condition(tokens)
            x = x + condition[:, None]
        out, state = self.lstm(x, state)
        return self.drop(out), state

    def _condition(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, T >= 3) sequences starting with the prefix -> (B, embed_dim) its mean embedding."""
        return self.embed(sequences[:, :PREFIX_LENGTH]).mean(dim=1)

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(tokens)[0]

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) int64 (a conditional model's start with the prefix) -> (next-token logits
        (B, T, V), state (h, c))."""
        out, state = self._run(tokens, state)
        return self.head(out), state

    def _start_generation(self, prompts: torch.Tensor):
        """Every prompt has the same length (prefix + BOS): one pass, then one step per token."""
        condition = self._condition(prompts) if self.conditioner is not None else None
        out, state = self._run(prompts, condition=condition)
        carried = [state]

        def step(new: torch.Tensor) -> torch.Tensor:
            h, carried[0] = self._run(new[:, None], carried[0], condition)  # (B, 1, hidden_size)
            return self.head(h[:, 0])

        return self.head(out[:, -1]), step


__all__ = ["SmilesLSTM", "SmilesLSTMConfig"]

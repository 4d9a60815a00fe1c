"""SmilesGPT: a small decoder-only transformer over SMILES tokens (as MolGPT, Bagal et al. 2021),
optionally conditioned on QED / logP / SA.

Network: genkernels.models.gpt.GPT's pre-norm blocks (causal self-attention with rotary positions,
SwiGLU MLP, RMSNorm, head tied to the embedding), held as `self.transformer`, over V ids: the SMILES
tokens of the config's SmilesTokenizer and, when conditional, the property prefix tokens
(genkernels.models._smiles). The context is max_len + 3 (the prefix). Loss: next-token NLL through
genkernels.ops.linear_cross_entropy with ignore_index (PAD, prefix and BOS targets count for
nothing), in nats per predicted token.

Generation uses GPT's KV cache: the prompt ([prefix,] BOS, the same length for every row) is
prefilled in one causal pass, then each step feeds only the new token (GPT.decode_step at its
position) and stops once every row has emitted EOS (genkernels.models._smiles.sample_smiles).
`generate(..., cache=False)` re-runs the whole prefix for every token; the greedy results are equal
(tests/models/test_smiles_gpt.py).
"""
from __future__ import annotations

import dataclasses

import torch

from genkernels.models._smiles import PREFIX_LENGTH, SmilesConfigMixin, SmilesLanguageModel
from genkernels.models._validate import check_choice, check_int, check_real
from genkernels.models.gpt import _DEFAULT_PRECISION, GPT, MLPS, NORMS, POSITIONS, GPTConfig


@dataclasses.dataclass
class SmilesGPTConfig(SmilesConfigMixin):
    """The SMILES fields (SmilesConfigMixin: tokenizer_json, max_len, conditional, cond_*) and the
    transformer's (GPTConfig's meaning): dim, depth, num_heads, mlp, norm, positions, dropout."""

    dim: int = 256
    depth: int = 4
    num_heads: int = 8
    mlp: str = "swiglu"
    norm: str = "rms"
    positions: str = "rope"
    dropout: float = 0.0

    def __post_init__(self):
        self._check_smiles_fields()
        for name in ("dim", "depth", "num_heads"):
            setattr(self, name, check_int(f"SmilesGPTConfig.{name}", getattr(self, name), 1))
        self.mlp = check_choice("SmilesGPTConfig.mlp", self.mlp, MLPS)
        self.norm = check_choice("SmilesGPTConfig.norm", self.norm, NORMS)
        self.positions = check_choice("SmilesGPTConfig.positions", self.positions, POSITIONS)
        self.dropout = check_real("SmilesGPTConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"SmilesGPTConfig.dropout must be < 1, got {self.dropout}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"SmilesGPTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads}) "
                             f"into an even head dim")


class SmilesGPT(SmilesLanguageModel):
    """GPT over SMILES tokens; see the module docstring."""

    name = "smiles-gpt"
    config_class = SmilesGPTConfig
    # The default recipe (`genkernels train smiles-gpt`, MOSES train split): 4 x 256, batch 64,
    # GPT's peak lr with warm-up and cosine decay; bf16 autocast where the CPU multiplies bf16 natively.
    train_defaults = {"steps": 600, "batch_size": 64, "lr": 2e-3, "warmup_steps": 50, "weight_decay": 0.1,
                      "min_lr_ratio": 0.05, "grad_clip": 1.0, "precision": _DEFAULT_PRECISION, "ema_decay": 0.99,
                      "eval_every": 200, "eval_max_items": 512, "log_every": 25, "num_samples": 48,
                      "checkpoint_every": 200}

    def __init__(self, config: SmilesGPTConfig | None = None):
        super().__init__(config if config is not None else SmilesGPTConfig())
        self._init_smiles()
        c = self.config
        self.transformer = GPT(GPTConfig(vocab_size=self.num_tokens, context=c.max_len + PREFIX_LENGTH, dim=c.dim,
                                         depth=c.depth, num_heads=c.num_heads, mlp=c.mlp, norm=c.norm,
                                         positions=c.positions, dropout=c.dropout))

    def _head(self):
        return self.transformer.head_weight, None

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer.hidden(tokens)  # (B, T, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> next-token logits (B, T, V) (uncached)."""
        return self.transformer(tokens)

    def _start_generation(self, prompts: torch.Tensor):
        """Prefill the KV cache with the prompts (B, P), then decode one position per step."""
        gpt, (batch, length) = self.transformer, prompts.shape
        caches = gpt.new_caches(batch, self.config.max_len + self.prefix_length)
        lengths = torch.full((batch,), length, dtype=torch.int64, device=prompts.device)
        position = [lengths]

        def step(new: torch.Tensor) -> torch.Tensor:
            logits = gpt.decode_step(new, position[0], caches)
            position[0] = position[0] + 1
            return logits

        return gpt.prefill(prompts, lengths, caches), step


__all__ = ["SmilesGPT", "SmilesGPTConfig"]

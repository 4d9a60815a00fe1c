"""SmilesVAE: a sequence VAE over SMILES strings (Gómez-Bombarelli et al. 2018, "Automatic chemical
design using a data-driven continuous representation of molecules"), with a jointly trained
property head and gradient-based optimisation in its latent space.

Network:

    tokens (B, T) [BOS ... EOS PAD ...]
    encoder  embed (B, T, E) -> bidirectional LSTM -> [h_fwd at the last real token, h_bwd after
             reading the sequence backwards] (B, 2 H_enc) -> linear -> mu, logvar (B, Z)
    z = mu + exp(logvar / 2) eps                                (reparameterisation, training)
    decoder  "lstm":        [embed(x_t), z] -> genkernels.nn.LSTM (decoder_layers) -> head (B, T-1, V);
                            z also sets the initial hidden state, h_0 = tanh(W z) per layer
             "transformer": causal pre-norm transformer (the GPT blocks) over [W z, embed(x_1..)]
                            with U z added to every input embedding: z is a prefix position and a
                            per-step input, as the LSTM's
    property head (property_head=True): MLP(mu) -> standardized (qed, logp, sa)

The bidirectional encoder is two genkernels.nn.LSTM stacks, the backward one fed each molecule
reversed *within its length* (a per-row gather): torch's bidirectional=True flips the padded
sequence, so its backward direction would read the padding before the molecule (MOSES avoids that
with packed sequences, which genkernels.nn.LSTM does not take).

This follows MOSES's VAE baseline in spirit (bidirectional GRU encoder, 3-layer GRU decoder that
gets z at every step, KL weight warmed up from 0 to 0.05) at a CPU-sized scale; the decoder sees z
at every step so a strong autoregressive decoder cannot simply ignore it (posterior collapse).

Loss (pad masked; "loss" in nats per predicted token, as the other SMILES families):

    loss = [sum_b recon_b + beta(step) sum_b KL'_b] / tokens + property_weight * MSE(head(mu), y)
    recon_b = -log p(x_b | z_b) over the tokens after BOS up to and including EOS  (nats/molecule)
    KL'     = KL(q(z | x) || N(0, I)), with free bits (Kingma et al. 2016) when free_bits > 0: each
              latent dimension's batch-mean KL counts as at least free_bits nats
    beta(step) = beta * min(1, step / kl_warmup)   (linear warm-up, Bowman et al. 2016)

The step is a buffer counting training calls of `loss` (train mode with gradients), so it travels
with checkpoints and resumes. Word dropout (Bowman et al. 2016) replaces each decoder input token
after BOS by UNK with probability word_dropout while training. The reported "nats_per_token" is
the beta = 1 bound (recon + KL) / tokens, an upper bound on the NLL per token comparable with
smiles-lstm's and smiles-gpt's "loss".

Generation: z ~ N(0, I) (sample) or given (decode_latent), then token by token from BOS, greedy or
with a temperature, until every row has emitted EOS or max_len positions are filled (PAD after
EOS). The special tokens PAD/BOS/UNK are never generated.

Latent-space optimisation (`optimize_latent`, Gómez-Bombarelli's Fig. 5 idea with gradients in
place of their Gaussian process): encode the start molecules to their posterior means, ascend the
property head's prediction by Adam on z with a Gaussian log-prior penalty (and an optional bound
on ||z||) that keeps z where the decoder has seen data, decode greedily along the path and keep
the valid molecules that are new (not among the starts, nor the given training set); their
properties are measured with RDKit, not taken from the head.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genkernels.models._validate import check_bool, check_choice, check_int, check_real, evaluation_count
from genkernels.models.base import GenerativeModel
from genkernels.nn.lstm import LSTM

DECODERS = ("lstm", "transformer")
PROPERTIES = ("qed", "logp", "sa")  # genkernels.chem.PROPERTY_NAMES: the head's outputs, in this order
# SmilesTokenizer's special ids (frozen API of genkernels.data.smiles)
PAD, BOS, EOS, UNK = 0, 1, 2, 3
_CHEM_INSTALL = 'pip install "genkernels[chem]" && pip install --no-deps molsets'


@dataclasses.dataclass
class SmilesVAEConfig:
    """vocab_size, max_len, tokenizer_json  set by config_for_data from the dataset (max_len counts
                   BOS and EOS: the longest token row the model reads or generates)
    embed_dim      token embedding size (encoder and decoder each have their own)
    encoder_hidden hidden size of each direction of the bidirectional LSTM encoder
    encoder_layers layers of each direction
    latent_dim     size of z
    decoder        "lstm" or "transformer" (see the module docstring)
    decoder_hidden, decoder_layers       the LSTM decoder's hidden size and layers
    transformer_dim, transformer_layers, transformer_heads   the transformer decoder's width, depth, heads
    dropout        on the decoder's embeddings and outputs (and between LSTM layers)
    word_dropout   probability of replacing a decoder input token by UNK while training
    beta           final KL weight (1: the ELBO; MOSES's VAE uses 0.05)
    kl_warmup      steps of the linear warm-up of the KL weight from 0 to beta (0: beta at once)
    free_bits      nats per latent dimension below which the KL is not penalised (0: off)
    property_head  train an MLP from mu to standardized (qed, logp, sa) jointly (the data then needs
                   properties: config_for_data / prepare_dataset call dataset.with_properties)
    property_hidden, property_weight   the head's width and its MSE's weight in the loss
    cond_max_items molecules whose properties are computed (RDKit) for the property head
    property_mean, property_std        standardization of (qed, logp, sa), fitted by config_for_data
    eval_samples   prior samples whose validity `evaluate` reports
    eval_reconstruct  held-out molecules `evaluate` decodes from mu for the reconstruction accuracy
    """

    vocab_size: int = 32
    max_len: int = 64
    tokenizer_json: str | None = None
    embed_dim: int = 64
    encoder_hidden: int = 128
    encoder_layers: int = 1
    latent_dim: int = 64
    decoder: str = "lstm"
    decoder_hidden: int = 256
    decoder_layers: int = 1
    transformer_dim: int = 128
    transformer_layers: int = 3
    transformer_heads: int = 4
    dropout: float = 0.1
    word_dropout: float = 0.0
    beta: float = 0.1
    kl_warmup: int = 200
    free_bits: float = 0.0
    property_head: bool = True
    property_hidden: int = 128
    property_weight: float = 1.0
    cond_max_items: int = 50_000
    property_mean: tuple[float, ...] | None = None
    property_std: tuple[float, ...] | None = None
    eval_samples: int = 256
    eval_reconstruct: int = 256

    def __post_init__(self):
        name = "SmilesVAEConfig"
        for field, minimum in (("vocab_size", 5), ("max_len", 3), ("embed_dim", 1), ("encoder_hidden", 1),
                               ("encoder_layers", 1), ("latent_dim", 1), ("decoder_hidden", 1),
                               ("decoder_layers", 1), ("transformer_dim", 2), ("transformer_layers", 1),
                               ("transformer_heads", 1),
                               ("kl_warmup", 0), ("property_hidden", 1), ("cond_max_items", 1),
                               ("eval_samples", 1), ("eval_reconstruct", 1)):
            setattr(self, field, check_int(f"{name}.{field}", getattr(self, field), minimum))
        self.decoder = check_choice(f"{name}.decoder", self.decoder, DECODERS)
        for field in ("dropout", "word_dropout"):
            value = check_real(f"{name}.{field}", getattr(self, field), 0.0)
            if value >= 1.0:
                raise ValueError(f"{name}.{field} must be < 1, got {value}")
            setattr(self, field, value)
        for field in ("beta", "free_bits", "property_weight"):
            setattr(self, field, check_real(f"{name}.{field}", getattr(self, field), 0.0))
        self.property_head = check_bool(f"{name}.property_head", self.property_head)
        if self.tokenizer_json is not None and not isinstance(self.tokenizer_json, str):
            raise TypeError(f"{name}.tokenizer_json must be a SmilesTokenizer JSON str or None, got "
                            f"{type(self.tokenizer_json).__name__}")
        if self.transformer_dim % self.transformer_heads or (self.transformer_dim // self.transformer_heads) % 2:
            raise ValueError(f"{name}.transformer_dim ({self.transformer_dim}) must be divisible by "
                             f"transformer_heads ({self.transformer_heads}) into an even head size (rotary "
                             "positions)")
        for field in ("property_mean", "property_std"):
            value = getattr(self, field)
            if value is None:
                continue
            if not isinstance(value, (tuple, list)) or len(value) != len(PROPERTIES):
                raise ValueError(f"{name}.{field} must be {len(PROPERTIES)} numbers ({', '.join(PROPERTIES)}) "
                                 f"or None, got {value!r}")
            setattr(self, field, tuple(check_real(f"{name}.{field}[{i}]", v) for i, v in enumerate(value)))
        if self.property_std is not None and min(self.property_std) <= 0:
            raise ValueError(f"{name}.property_std must be positive, got {self.property_std}")


class _BidirectionalEncoder(nn.Module):
    """tokens (B, T) -> features (B, 2 H): the last states of a forward and a backward LSTM, each
    over exactly the molecule's tokens (the backward one reads it reversed within its length)."""

    def __init__(self, c: SmilesVAEConfig):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD)
        self.forward_lstm = LSTM(c.embed_dim, c.encoder_hidden, c.encoder_layers, batch_first=True)
        self.backward_lstm = LSTM(c.embed_dim, c.encoder_hidden, c.encoder_layers, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape
        lengths = (tokens != PAD).sum(1).clamp(min=1)  # (B,) tokens of each row, padding is trailing
        steps = torch.arange(length, device=tokens.device).expand(batch, length)  # (B, T)
        # row b reversed within its first lengths[b] positions, padding left where it is
        reverse = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
        x = self.embed(tokens)  # (B, T, E)
        x_reversed = self.embed(tokens.gather(1, reverse))
        out_forward, _ = self.forward_lstm(x)  # (B, T, H)
        out_backward, _ = self.backward_lstm(x_reversed)
        last = (lengths - 1).view(batch, 1, 1).expand(batch, 1, out_forward.shape[-1])
        return torch.cat([out_forward.gather(1, last)[:, 0], out_backward.gather(1, last)[:, 0]], dim=-1)


class _LSTMDecoder(nn.Module):
    """Teacher-forced logits for inputs (B, T) given z (B, Z), and the step-by-step form."""

    def __init__(self, c: SmilesVAEConfig):
        super().__init__()
        self.num_layers, self.hidden = c.decoder_layers, c.decoder_hidden
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD)
        self.init_state = nn.Linear(c.latent_dim, c.decoder_layers * c.decoder_hidden)
        self.lstm = LSTM(c.embed_dim + c.latent_dim, c.decoder_hidden, c.decoder_layers, batch_first=True,
                         dropout=c.dropout if c.decoder_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.decoder_hidden, c.vocab_size)
        with torch.no_grad():
            for layer in range(c.decoder_layers):  # forget-gate bias 1 (gate order i, f, g, o)
                getattr(self.lstm, f"bias_ih_l{layer}")[c.decoder_hidden:2 * c.decoder_hidden].fill_(1.0)
                getattr(self.lstm, f"bias_hh_l{layer}")[c.decoder_hidden:2 * c.decoder_hidden].zero_()

    def start(self, z: torch.Tensor):
        """The state before BOS: h_0 = tanh(W z) per layer, c_0 = 0, each (L, B, H)."""
        h = torch.tanh(self.init_state(z)).view(z.shape[0], self.num_layers, self.hidden).transpose(0, 1)
        h = h.contiguous()
        return h, torch.zeros_like(h)

    def forward(self, inputs: torch.Tensor, z: torch.Tensor, state=None):
        """inputs (B, T), z (B, Z) -> logits (B, T, V) and the LSTM state after the inputs."""
        x = self.drop(self.embed(inputs))  # (B, T, E)
        x = torch.cat([x, z[:, None, :].expand(-1, inputs.shape[1], -1)], dim=-1)  # (B, T, E + Z)
        out, state = self.lstm(x, self.start(z) if state is None else state)
        return self.head(self.drop(out)), state

    def step(self, tokens: torch.Tensor, z: torch.Tensor, state):
        """tokens (B,) -> logits (B, V) for the next token, and the new state (None: the start)."""
        logits, state = self(tokens[:, None], z, state)
        return logits[:, 0], state


class _TransformerDecoder(nn.Module):
    """Causal transformer over [prefix(z), embed(x_1) + U z, ..., embed(x_T) + U z] (GPT blocks);
    position 0 is z's own, the output at position t predicts token t (t >= 1)."""

    def __init__(self, c: SmilesVAEConfig):
        from genkernels.models.gpt import GPTBlock, GPTConfig
        from genkernels.nn.transformer_layers import RMSNorm

        super().__init__()
        self.gpt_config = GPTConfig(vocab_size=c.vocab_size, context=c.max_len + 1, dim=c.transformer_dim,
                                    depth=c.transformer_layers, num_heads=c.transformer_heads, dropout=c.dropout)
        self.embed = nn.Embedding(c.vocab_size, c.transformer_dim)
        self.prefix = nn.Linear(c.latent_dim, c.transformer_dim)
        self.z_input = nn.Linear(c.latent_dim, c.transformer_dim)
        self.blocks = nn.ModuleList(GPTBlock(self.gpt_config) for _ in range(c.transformer_layers))
        self.norm = RMSNorm(c.transformer_dim)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.transformer_dim, c.vocab_size)
        for module in self.modules():  # GPT-2's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _inputs(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.drop(self.embed(tokens) + self.z_input(z)[:, None, :])  # (B, T, D)

    def forward(self, inputs: torch.Tensor, z: torch.Tensor, state=None):
        """inputs (B, T), z (B, Z) -> logits (B, T, V) (teacher forcing, no cache)."""
        x = torch.cat([self.prefix(z)[:, None, :], self._inputs(inputs, z)], dim=1)  # (B, 1 + T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 1:])), None

    def start(self, z: torch.Tensor):
        """KV caches holding the prefix position; the state is (caches, filled positions (B,))."""
        from genkernels.nn.attention import KVCache

        g = self.gpt_config
        caches = [KVCache(z.shape[0], g.context + 1, g.kv_heads, g.head_dim, device=z.device, dtype=z.dtype)
                  for _ in self.blocks]
        x = self.prefix(z)[:, None, :]  # (B, 1, D)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache)
        return caches, torch.ones(z.shape[0], dtype=torch.int64, device=z.device)

    def step(self, tokens: torch.Tensor, z: torch.Tensor, state):
        """tokens (B,) at the next position -> logits (B, V) for the one after, the updated state."""
        caches, lengths = self.start(z) if state is None else state
        x = self._inputs(tokens[:, None], z)  # (B, 1, D)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache, lengths, decode=True)
        return self.head(self.norm(x[:, 0])), (caches, lengths + 1)


class SmilesVAE(GenerativeModel):
    """Sequence VAE over SMILES; see the module docstring for the network, loss and optimisation."""

    name = "smiles-vae"
    config_class = SmilesVAEConfig
    default_data = "moses"
    data_kinds = ("smiles",)
    # The default recipe (`genkernels train smiles-vae`, MOSES): 50,000 training molecules with
    # properties (RDKit: ~4.5 min for the 50,000 + 10,000 val on the first run, cached on disk after),
    # batch 128, 300 steps, KL warm-up over 200 steps to beta 0.1. Measured once (OMP_NUM_THREADS=2, a
    # loaded 2-core machine; genkernels._C not built, so genkernels.nn.LSTM ran its torch fallback):
    # 13 min wall in all, training ~1.0-3 s/step; val 1.05 nats/token (beta = 1 bound), KL 8.0 nats,
    # 64/64 active units; 1000 prior samples 7.1% valid (all unique, 98.6% novel); 1000 MOSES test
    # molecules decoded greedily from mu: 0.0% exact, 63.5% valid. A short run: the encoder has not
    # yet learnt molecule-specific codes (MOSES trains its VAE for 100 epochs on a GPU).
    train_defaults = {"steps": 300, "batch_size": 128, "lr": 3e-3, "warmup_steps": 30, "weight_decay": 0.0,
                      "min_lr_ratio": 0.1, "grad_clip": 1.0, "precision": "fp32", "ema_decay": 0.99,
                      "eval_every": 150, "eval_max_items": 512, "num_samples": 24}
    evaluate_reports_loss = True
    metric_units = {"loss": "nats/token, -beta-ELBO (+ property MSE)", "recon": "nats/molecule",
                    "kl": "nats/molecule", "nats_per_token": "nats/token, -ELBO", "reconstruction": "fraction",
                    "valid": "fraction", "property_mse": "standardized units^2"}

    def __init__(self, config: SmilesVAEConfig | None = None):
        super().__init__(config if config is not None else SmilesVAEConfig())
        c = self.config
        self.encoder = _BidirectionalEncoder(c)
        self.to_latent = nn.Linear(2 * c.encoder_hidden, 2 * c.latent_dim)
        self.decoder = _LSTMDecoder(c) if c.decoder == "lstm" else _TransformerDecoder(c)
        self.property_net = None
        if c.property_head:
            self.property_net = nn.Sequential(nn.Linear(c.latent_dim, c.property_hidden), nn.ReLU(),
                                              nn.Linear(c.property_hidden, c.property_hidden), nn.ReLU(),
                                              nn.Linear(c.property_hidden, len(PROPERTIES)))
        mean = c.property_mean if c.property_mean is not None else (0.0,) * len(PROPERTIES)
        std = c.property_std if c.property_std is not None else (1.0,) * len(PROPERTIES)
        self.register_buffer("property_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("property_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        # training calls of `loss` so far: the KL warm-up's clock (an integer buffer, so checkpoints
        # carry it and the trainer's EMA copies it rather than averaging it)
        self.register_buffer("kl_step", torch.zeros((), dtype=torch.int64))
        self.tokenizer = None
        if c.tokenizer_json is not None:
            from genkernels.data.smiles import SmilesTokenizer

            self.tokenizer = SmilesTokenizer.from_json(c.tokenizer_json)
            if self.tokenizer.vocab_size != c.vocab_size:
                raise ValueError(f"SmilesVAEConfig.vocab_size ({c.vocab_size}) must equal the tokenizer's "
                                 f"vocab size ({self.tokenizer.vocab_size})")
        self._figure_smiles: list[str] | None = None  # held-out molecules kept by evaluate()

    @property
    def device(self) -> torch.device:
        return self.to_latent.weight.device

    # -- input checks -------------------------------------------------------------------------------
    def _check_tokens(self, tokens, name: str = "tokens") -> torch.Tensor:
        """Token rows (B, T) [BOS ... EOS PAD ...] -> int64 on the model's device."""
        c = self.config
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{name} must be an integer tensor (B, T) of token ids, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (B, T) of token ids, got dtype {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[1] < 2:
            raise ValueError(f"{name} must have shape (B, T) with T >= 2 (BOS ... EOS), got {tuple(tokens.shape)}")
        if tokens.shape[1] > c.max_len:
            raise ValueError(f"{name} has {tokens.shape[1]} positions, more than max_len ({c.max_len})")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size = {c.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        return tokens.to(self.device, torch.int64)

    def _check_latent(self, z, name: str = "z") -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            got = f"dtype {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise TypeError(f"{name} must be a floating tensor (N, latent_dim = {self.config.latent_dim}), got {got}")
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"{name} must have shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return z.to(self.device, self.to_latent.weight.dtype)

    def _require_tokenizer(self, what: str):
        if self.tokenizer is None:
            raise ValueError(f"{what} needs SmilesVAEConfig.tokenizer_json; build the config with "
                             "SmilesVAE.config_for_data(dataset)")
        return self.tokenizer

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise ValueError(f"batch must be tokens (B, T) or (tokens, properties (B, 3)), got {len(batch)} parts")
            tokens, props = batch
            if not isinstance(props, torch.Tensor) or props.dim() != 2 or props.shape[1] != len(PROPERTIES):
                got = tuple(props.shape) if isinstance(props, torch.Tensor) else type(props).__name__
                raise ValueError(f"batch properties must be a (B, {len(PROPERTIES)}) tensor, got {got}")
            return self._check_tokens(tokens, "batch"), props.to(self.device, torch.float32)
        return self._check_tokens(batch, "batch"), None

    # -- encoder / decoder --------------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) int [BOS ... EOS PAD ...] -> posterior mean and log-variance, (B, Z) each."""
        tokens = self._check_tokens(tokens)
        mu, logvar = self.to_latent(self.encoder(tokens)).chunk(2, dim=-1)
        return mu.contiguous(), logvar.contiguous()

    def decoder_logits(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits (B, T - 1, V) for tokens (B, T) given z (B, Z)."""
        return self.decoder(tokens[:, :-1], z)[0]

    def predict_properties(self, z: torch.Tensor) -> torch.Tensor:
        """The property head at latents z (N, Z) -> (N, 3) (qed, logp, sa) in their own units."""
        if self.property_net is None:
            raise ValueError("predict_properties needs a property head: SmilesVAEConfig.property_head=True")
        return self.property_net(self._check_latent(z)) * self.property_std + self.property_mean

    def kl_weight(self, step: int | None = None) -> float:
        """beta(step) = beta * min(1, step / kl_warmup); step None: the training steps taken so far."""
        c = self.config
        step = int(self.kl_step) if step is None else check_int("step", step, 0)
        if c.kl_warmup == 0:
            return c.beta
        return c.beta * min(1.0, step / c.kl_warmup)

    # -- training -----------------------------------------------------------------------------------
    def _terms(self, tokens: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """Per-molecule recon (B,) and KL (B,) in nats, per-dimension KL (B, Z), mu, token count."""
        mu, logvar = self.encode(tokens)
        logvar = logvar.float()
        z = mu + torch.exp(0.5 * logvar).to(mu.dtype) * torch.randn_like(mu) if sample else mu
        inputs = tokens[:, :-1]
        if self.training and self.config.word_dropout > 0:
            drop = (torch.rand(inputs.shape, device=inputs.device) < self.config.word_dropout)
            drop &= (inputs != PAD) & (inputs != BOS)
            inputs = inputs.masked_fill(drop, UNK)
        logits = self.decoder(inputs, z)[0].float()  # (B, T - 1, V)
        targets = tokens[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD, reduction="none")  # (B, T - 1)
        kl_dims = 0.5 * (mu.float().pow(2) + logvar.exp() - 1.0 - logvar)  # (B, Z)
        return {"recon": nll.sum(1), "kl": kl_dims.sum(1), "kl_dims": kl_dims, "mu": mu,
                "tokens": (targets != PAD).sum()}

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch: tokens (B, T), or (tokens, properties (B, 3)) with the property head ->
        {"loss": objective in nats/token (see the module docstring), "recon", "kl": nats/molecule,
        "nats_per_token": the beta = 1 bound, "beta": the KL weight used, "property_mse"}."""
        tokens, props = self._split(batch)
        c = self.config
        training = self.training and torch.is_grad_enabled()
        beta = self.kl_weight()
        terms = self._terms(tokens)
        num_tokens = terms["tokens"].clamp(min=1)
        kl_objective = terms["kl"].sum()
        if c.free_bits > 0:
            kl_objective = terms["kl_dims"].mean(0).clamp(min=c.free_bits).sum() * tokens.shape[0]
        loss = (terms["recon"].sum() + beta * kl_objective) / num_tokens
        out = {"loss": loss, "recon": terms["recon"].mean().detach(), "kl": terms["kl"].mean().detach(),
               "nats_per_token": ((terms["recon"].sum() + terms["kl"].sum()) / num_tokens).detach(),
               "beta": torch.tensor(beta, device=loss.device)}
        if self.property_net is not None and props is None and training:
            raise ValueError("this SmilesVAE has a property head (property_head=True), so batches must be "
                                 "(tokens, properties): use a dataset with properties (model.prepare_dataset)")
        if self.property_net is not None and props is not None:
            target = (props - self.property_mean) / self.property_std
            mse = F.mse_loss(self.property_net(terms["mu"]).float(), target)
            out["loss"] = loss + c.property_weight * mse
            out["property_mse"] = mse.detach()
        if training:
            self.kl_step += 1
        return out

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_tokens(self, z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Token rows (N, max_len) int64 [BOS ... EOS PAD ...] decoded from latents z (N, Z):
        greedy for temperature 0, else sampled from softmax(logits / temperature)."""
        z = self._check_latent(z)
        temperature = check_real("temperature", temperature, 0.0)
        n, length = z.shape[0], self.config.max_len
        out = torch.full((n, length), PAD, dtype=torch.int64, device=z.device)
        out[:, 0] = BOS
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        banned = torch.tensor([PAD, BOS, UNK], device=z.device)
        state = self.decoder.start(z)
        token = out[:, 0]
        for t in range(1, length):
            logits, state = self.decoder.step(token, z, state)
            logits = logits.float()
            logits[:, banned] = float("-inf")
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                token = torch.multinomial((logits / temperature).softmax(-1), 1)[:, 0]
            token = token.masked_fill(done, PAD)
            out[:, t] = token
            done |= token == EOS
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor, greedy: bool = True, temperature: float = 1.0) -> list[str]:
        """SMILES strings decoded from latents z (N, Z): greedy, or sampled with the temperature."""
        check_bool("greedy", greedy)
        tokens = self.generate_tokens(z, 0.0 if greedy else temperature)
        return self.decode(tokens)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Token rows (N, T) -> SMILES strings (up to each row's EOS)."""
        tokenizer = self._require_tokenizer("decode")
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a (N, T) tensor of token ids, got {got}")
        return [tokenizer.decode(row) for row in tokens.long().cpu().tolist()]

    def encode_smiles(self, smiles: Sequence[str]) -> torch.Tensor:
        """SMILES strings -> token rows (N, max_len) [BOS ... EOS PAD ...]; ValueError naming a string
        longer than max_len or holding tokens outside the vocabulary."""
        tokenizer = self._require_tokenizer("encode_smiles")
        if isinstance(smiles, str) or not isinstance(smiles, Sequence):
            raise TypeError(f"smiles must be a sequence of SMILES strings, got {type(smiles).__name__}")
        rows = torch.full((len(smiles), self.config.max_len), PAD, dtype=torch.int64)
        for i, s in enumerate(smiles):
            if not isinstance(s, str) or not s:
                raise ValueError(f"smiles[{i}] must be a non-empty SMILES string, got {s!r}")
            ids = tokenizer.encode(s)
            if UNK in ids:
                raise ValueError(f"smiles[{i}] {s!r} has tokens outside this model's vocabulary")
            if len(ids) > self.config.max_len:
                raise ValueError(f"smiles[{i}] {s!r} is {len(ids)} tokens with BOS/EOS, more than max_len "
                                 f"({self.config.max_len})")
            rows[i, :len(ids)] = torch.tensor(ids)
        return rows.to(self.device)

    @torch.no_grad()
    def _prior_latents(self, n: int, targets: dict[str, float | None], candidates: int) -> torch.Tensor:
        """n latents from N(0, I); with property targets, the n of candidates * n prior draws whose
        head predictions lie closest (in standardized units) to the targets."""
        z = torch.randn(n, self.config.latent_dim, device=self.device)
        given = {k: v for k, v in targets.items() if v is not None}
        if not given:
            return z
        if self.property_net is None:
            raise ValueError(f"{', '.join(given)} conditions need a property head (SmilesVAEConfig.property_head)")
        pool = torch.randn(n * candidates, self.config.latent_dim, device=self.device)
        predicted = self.property_net(pool).float()  # (n * candidates, 3), standardized
        distance = torch.zeros(pool.shape[0], device=self.device)
        for name, value in given.items():
            i = PROPERTIES.index(name)
            target = (check_real(name, value) - self.property_mean[i]) / self.property_std[i]
            distance += (predicted[:, i] - target).pow(2)
        return pool[distance.argsort()[:n]]

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, qed: float | None = None, logp: float | None = None,
               sa: float | None = None) -> torch.Tensor:
        """n token rows (n, max_len) int64 decoded from z ~ N(0, I) (PAD after EOS). temperature
        scales the decoder's logits (0: greedy). qed / logp / sa (property head only): keep the n of
        20 n prior draws whose predicted properties are closest to the targets (a latent filter; the
        molecules' measured properties follow only as well as the head predicts them)."""
        n = check_int("n", n, 1)
        z = self._prior_latents(n, {"qed": qed, "logp": logp, "sa": sa}, candidates=20)
        return self.generate_tokens(z, temperature)

    @torch.no_grad()
    def sample_smiles(self, n: int, temperature: float = 1.0, batch_size: int = 256, qed: float | None = None,
                      logp: float | None = None, sa: float | None = None, progress: bool = False) -> list[str]:
        """n SMILES strings from the prior, decoded in batches of batch_size (see `sample`)."""
        n, batch_size = check_int("n", n, 1), check_int("batch_size", batch_size, 1)
        check_bool("progress", progress)
        self._require_tokenizer("sample_smiles")
        out: list[str] = []
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="sample smiles-vae")
        for start in starts:
            out += self.decode(self.sample(min(batch_size, n - start), temperature, qed=qed, logp=logp, sa=sa))
        return out

    @torch.no_grad()
    def reconstruct(self, tokens: torch.Tensor) -> list[str]:
        """Greedy decodings of the posterior means of token rows (N, T)."""
        mu, _ = self.encode(tokens)
        return self.decode_latent(mu, greedy=True)

    # -- latent-space optimisation --------------------------------------------------------------------
    def optimize_latent(self, smiles: Sequence[str], property: str = "qed", steps: int = 100, lr: float = 0.05,
                        *, goal: str | None = None, prior_weight: float = 0.1, max_norm: float | None = None,
                        decode_every: int = 10, training_smiles: Iterable[str] | None = None,
                        num_best: int = 10) -> dict[str, Any]:
        """Gradient ascent on the property head from the start molecules' posterior means.

        objective(z) = sign * head(z)[property] (standardized) - prior_weight * ||z||^2 / 2,
        sign = +1 for goal "max" (default for qed and logp), -1 for "min" (default for sa: lower is
        easier to synthesise); Adam with learning rate lr for `steps` steps, z projected onto the
        ball ||z|| <= max_norm when given. Every decode_every steps (and at the last) the whole batch
        is decoded greedily; the decoded molecules are canonicalised with RDKit, and those valid and
        new (not a start molecule, not in training_smiles: canonical SMILES, as MOSES's are) are kept.

        Returns {"property", "goal", "num_start": valid start molecules,
          "start_mean": their mean measured property, "end_mean": mean measured property of the
          distinct valid novel molecules found, "improvement": sign * (end_mean - start_mean),
          "predicted_start", "predicted_end": the head's mean prediction at the first / last z,
          "fraction_valid": of all decodings along the paths, "num_decoded", "num_novel",
          "best": up to num_best (smiles, value) pairs, best first};
        end_mean and improvement are NaN when no valid novel molecule was found.
        """
        from genkernels.chem import canonical_smiles, mol_properties

        if self.property_net is None:
            raise ValueError("optimize_latent needs a property head: train with SmilesVAEConfig.property_head=True")
        property = check_choice("property", property, PROPERTIES)
        if goal is None:
            goal = "min" if property == "sa" else "max"
        goal = check_choice("goal", goal, ("max", "min"))
        steps, decode_every = check_int("steps", steps, 1), check_int("decode_every", decode_every, 1)
        lr, prior_weight = check_real("lr", lr, 0.0), check_real("prior_weight", prior_weight, 0.0)
        num_best = check_int("num_best", num_best, 1)
        if max_norm is not None:
            max_norm = check_real("max_norm", max_norm, 0.0)
        if isinstance(smiles, str) or not isinstance(smiles, Sequence) or not smiles:
            raise ValueError(f"smiles must be a non-empty sequence of SMILES strings, got {smiles!r:.60}")
        index, sign = PROPERTIES.index(property), 1.0 if goal == "max" else -1.0

        start_canonical = [canonical_smiles(s) for s in smiles]
        known = {s for s in start_canonical if s is not None} | set(smiles)
        if training_smiles is not None:
            if isinstance(training_smiles, str):
                raise TypeError("training_smiles must be an iterable of SMILES strings, got a str")
            known |= set(training_smiles)
        start_values = np.asarray(mol_properties([s for s in start_canonical if s is not None])[property], float)
        start_values = start_values[np.isfinite(start_values)]

        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z0, _ = self.encode(self.encode_smiles(smiles))
                predicted_start = float(self.predict_properties(z0)[:, index].mean())
            z = z0.detach().clone().float().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=lr)
            decoded: list[str] = []
            for step in range(1, steps + 1):
                optimizer.zero_grad(set_to_none=True)
                standardized = self.property_net(z)[:, index]
                objective = sign * standardized - prior_weight * 0.5 * z.pow(2).sum(1)
                (-objective.sum()).backward()
                optimizer.step()
                if max_norm is not None:
                    with torch.no_grad():
                        norms = z.norm(dim=1, keepdim=True).clamp(min=1e-12)
                        z.mul_((max_norm / norms).clamp(max=1.0))
                if step % decode_every == 0 or step == steps:
                    decoded += self.decode_latent(z.detach(), greedy=True)
            with torch.no_grad():
                predicted_end = float(self.predict_properties(z.detach())[:, index].mean())
        finally:
            self.train(was_training)

        canonical = [canonical_smiles(s) for s in decoded]
        valid = [s for s in canonical if s is not None]
        novel = sorted({s for s in valid if s not in known})
        values = mol_properties(novel)[property] if novel else []
        found = [(s, float(v)) for s, v in zip(novel, values) if math.isfinite(float(v))]
        found.sort(key=lambda item: -sign * item[1])
        start_mean = float(start_values.mean()) if len(start_values) else float("nan")
        end_mean = sum(v for _, v in found) / len(found) if found else float("nan")
        return {"property": property, "goal": goal, "num_start": int(len(start_values)),
                "start_mean": start_mean, "end_mean": end_mean, "improvement": sign * (end_mean - start_mean),
                "predicted_start": predicted_start, "predicted_end": predicted_end,
                "fraction_valid": len(valid) / max(1, len(decoded)), "num_decoded": len(decoded),
                "num_novel": len(found), "best": found[:num_best]}

    # -- evaluation, figures, files ------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 128) -> dict[str, float]:
        """On a held-out dataset: "loss" (the training objective at the current beta), "recon" and
        "kl" (nats/molecule), "nats_per_token" (the beta = 1 bound), "reconstruction" (fraction of
        the first eval_reconstruct molecules decoded exactly, greedy, from mu), "active_units"
        (latent dims whose posterior mean varies across molecules, Cov > 0.01: Burda et al. 2016),
        "property_mse" (head), "valid" and "unique" (RDKit, of eval_samples prior samples)."""
        count = evaluation_count(dataset, max_items, batch_size)
        c = self.config
        totals: dict[str, float] = {}
        num_tokens, mus, exact, checked = 0, [], 0, 0
        for start in range(0, count, batch_size):
            batch = _collate([dataset[i] for i in range(start, min(count, start + batch_size))])
            losses = self.loss(batch)
            tokens, _ = self._split(batch)
            n, t = tokens.shape[0], int((tokens[:, 1:] != PAD).sum())
            for key, value in losses.items():
                weight = t if key in ("loss", "nats_per_token") else n
                totals[key] = totals.get(key, 0.0) + float(value) * weight
            num_tokens += t
            mu, _ = self.encode(tokens)
            mus.append(mu.float())
            if checked < c.eval_reconstruct and self.tokenizer is not None:
                rows = tokens[: c.eval_reconstruct - checked]
                decoded = self.decode_latent(mu[: rows.shape[0]], greedy=True)
                exact += sum(a == b for a, b in zip(decoded, self.decode(rows)))
                checked += rows.shape[0]
                if start == 0:
                    self._figure_smiles = self.decode(rows[:12])
        metrics = {key: value / (num_tokens if key in ("loss", "nats_per_token") else count)
                   for key, value in totals.items() if key != "beta"}
        metrics["beta"] = self.kl_weight()
        mu = torch.cat(mus)
        metrics["active_units"] = float((mu.var(0) > 0.01).sum()) if mu.shape[0] > 1 else 0.0
        if checked:
            metrics["reconstruction"] = exact / checked
        if self.tokenizer is not None:
            metrics.update(_validity(self.sample_smiles(c.eval_samples)))
        return metrics

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"molecules": a grid of the valid samples with QED legends; "reconstructions": held-out
        molecules (kept by the last evaluate) beside their greedy reconstructions from mu} (RDKit;
        none without it)."""
        try:
            from genkernels.chem import draw_molecules, mol_properties
        except ImportError:
            return {}
        if self.tokenizer is None or not isinstance(samples, torch.Tensor) or samples.dim() != 2:
            return {}
        try:
            import rdkit  # noqa: F401
        except ImportError:
            return {}
        smiles = [s for s in self.decode(samples) if s]
        qed = mol_properties(smiles)["qed"] if smiles else []
        keep = [(s, q) for s, q in zip(smiles, qed) if math.isfinite(float(q))][:36]
        figures: dict[str, Any] = {}
        if keep:
            figures["molecules"] = draw_molecules([s for s, _ in keep], [f"QED {float(q):.2f}" for _, q in keep],
                                                  nrow=nrow or 6)
        if self._figure_smiles:
            inputs = self._figure_smiles[:6]
            recon = self.reconstruct(self.encode_smiles(inputs))
            pairs, legends = [], []
            for a, b in zip(inputs, recon):
                pairs += [a, b]
                legends += ["input", "recon." + (" (exact)" if a == b else "")]
            figures["reconstructions"] = draw_molecules(pairs, legends, nrow=2)
        return figures

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """{"samples.smi": one decoded SMILES per line}."""
        if self.tokenizer is None or not isinstance(samples, torch.Tensor) or samples.dim() != 2:
            return {}
        return {"samples.smi": ("\n".join(self.decode(samples)) + "\n").encode()}

    # -- fitting to data ------------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> SmilesVAEConfig:
        """tokenizer_json, vocab_size and max_len from the dataset's tokenizer; with the property head
        (the default) property_mean / property_std fitted on dataset.with_properties(max_items=
        cond_max_items) (or the dataset's own properties)."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        tokenizer = getattr(dataset, "tokenizer", None)
        if tokenizer is not None:
            values.setdefault("tokenizer_json", tokenizer.to_json())
            values.setdefault("vocab_size", int(tokenizer.vocab_size))
        if getattr(dataset, "max_len", None):
            values.setdefault("max_len", int(dataset.max_len))
        config = cls.config_class(**values)
        if config.property_head and (config.property_mean is None or config.property_std is None):
            props = _properties_of(dataset, config.cond_max_items)
            mean, std = props.mean(0), props.std(0).clamp(min=1e-6)
            config.property_mean = config.property_mean or tuple(float(v) for v in mean)
            config.property_std = config.property_std or tuple(float(v) for v in std)
        return config

    def prepare_dataset(self, dataset):
        """With the property head: the dataset with properties (dataset.with_properties(max_items=
        cond_max_items), a seeded subset of the big MOSES split); else as it is."""
        if not self.config.property_head or getattr(dataset, "properties", None) is not None:
            return dataset
        if not hasattr(dataset, "with_properties"):
            raise ValueError("the property head needs a SmilesDataset (with_properties); set property_head=False")
        return dataset.with_properties(max_items=self.config.cond_max_items)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the dataset's tokens are not this model's (tokenizer or length)."""
        self.check_data(dataset, data_name)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        tokenizer = getattr(dataset, "tokenizer", None)
        if tokenizer is not None and self.config.tokenizer_json is not None \
                and tokenizer.to_json() != self.config.tokenizer_json:
            raise ValueError(f"{name} was tokenized with another vocabulary than this SmilesVAE's")
        max_len = getattr(dataset, "max_len", None)
        if max_len is not None and int(max_len) > self.config.max_len:
            raise ValueError(f"{name} has rows of {max_len} tokens, more than this SmilesVAE's max_len "
                             f"({self.config.max_len})")


def _collate(items: list) -> Any:
    if isinstance(items[0], (tuple, list)):
        return tuple(torch.stack(parts) for parts in zip(*items))
    return torch.stack(items)


def _properties_of(dataset, max_items: int) -> torch.Tensor:
    """(N, 3) float32 properties of the dataset (its own, else with_properties(max_items=...))."""
    props = getattr(dataset, "properties", None)
    if props is None:
        if not hasattr(dataset, "with_properties"):
            raise ValueError("the property head needs a SmilesDataset (with_properties); set property_head=False")
        props = dataset.with_properties(max_items=max_items).properties
    props = torch.as_tensor(props, dtype=torch.float32)
    props = props[torch.isfinite(props).all(1)]
    if props.shape[0] < 2:
        raise ValueError(f"the property head needs at least 2 molecules with properties, got {props.shape[0]}")
    return props


def _validity(smiles: list[str]) -> dict[str, float]:
    """{"valid": fraction RDKit parses, "unique": distinct canonical among the valid}; {} without RDKit."""
    try:
        from genkernels.chem import canonical_smiles

        canonical = [canonical_smiles(s) for s in smiles]
    except ImportError:
        return {}
    valid = [s for s in canonical if s is not None]
    return {"valid": len(valid) / max(1, len(smiles)), "unique": len(set(valid)) / max(1, len(valid))}


__all__ = ["SmilesVAE", "SmilesVAEConfig"]

"""Vector quantiser of VQ-VAE (van den Oord et al. 2017) with an EMA codebook (as in their appendix
and Razavi et al. 2019) and dead-code restarts (Dhariwal et al. 2020, Jukebox).

Every input vector z (the encoder output at one position, code_dim channels) is replaced by its
nearest codebook entry e_k, k = argmin_j ||z - e_j||^2, with distances computed in float32 as
||z||^2 - 2 z.e_j + ||e_j||^2 (one matrix product) whatever the input dtype. Gradients pass
straight through (z + sg(e_k - z)), and the commitment loss ||z - sg(e_k)||^2 (mean over the
elements, weighted by `commitment`) keeps the encoder close to its codes.

The codebook is not a parameter: in training mode each forward updates exponential moving averages
of the number of vectors assigned to each code (N_k) and of their sum (m_k),

    N_k <- d N_k + (1 - d) n_k,   m_k <- d m_k + (1 - d) sum_{z -> k} z,   e_k = m_k / N~_k,

with Laplace smoothing N~_k = (N_k + eps) / (sum N + K eps) * sum N so that a code with no
assignments never divides by zero. A code chosen by no input in `dead_threshold` training batches in
a row is dead: it is re-initialised to a random input vector of the current batch (and its averages
to that vector with weight 1), so the codebook keeps being used. The very first training batch
initialises the whole codebook from random input vectors (a data-dependent start).

Under torch.distributed the counts and sums are all-reduced and restarted codes broadcast from
rank 0, so every rank keeps the same codebook. A fused nearest-code kernel was not written: on CPU
the distance GEMM plus argmin is dominated by the GEMM that torch already runs at BLAS speed.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from genkernels.models._validate import check_bool, check_int, check_real


class VectorQuantizer(nn.Module):
    """Nearest-code lookup with an EMA codebook, dead-code restarts and a straight-through gradient.

    num_codes       codebook size K
    code_dim        size D of each code vector (the channel dimension of the input)
    decay           EMA decay d of the counts and sums
    eps             Laplace smoothing of the counts
    commitment      weight beta of the commitment loss beta * mean (z - sg(e))^2
    restart_dead    re-initialise dead codes from the current batch (training mode only)
    dead_threshold  training batches in a row without any assignment after which a code is dead

    forward(z, update=None) with z (N, D, *spatial) returns (quantized, codes, stats):
      quantized (N, D, *spatial), the codes with a straight-through gradient to z, in z's dtype
      codes     (N, *spatial) int64 indices into the codebook
      stats     {"commitment": weighted commitment loss (scalar, differentiable in z),
                 "perplexity": exp(entropy) of the batch's code histogram, "usage": fraction of the
                 K codes the batch uses} (the last two detached)
    update (default: self.training) applies the EMA update and the dead-code restarts.
    """

    def __init__(self, num_codes: int, code_dim: int, decay: float = 0.99, eps: float = 1e-5,
                 commitment: float = 0.25, restart_dead: bool = True, dead_threshold: int = 20):
        super().__init__()
        self.num_codes = check_int("num_codes", num_codes, 1)
        self.code_dim = check_int("code_dim", code_dim, 1)
        self.decay = check_real("decay", decay, 0.0)
        if self.decay >= 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.eps = check_real("eps", eps, 0.0)
        self.commitment = check_real("commitment", commitment, 0.0)
        self.restart_dead = check_bool("restart_dead", restart_dead)
        self.dead_threshold = check_int("dead_threshold", dead_threshold, 1)
        codebook = torch.randn(num_codes, code_dim)
        self.register_buffer("codebook", codebook)                    # (K, D) e_k
        self.register_buffer("cluster_size", torch.ones(num_codes))   # (K,) N_k
        self.register_buffer("embed_sum", codebook.clone())           # (K, D) m_k
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))  # (K,)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, decay={self.decay}, "
                f"commitment={self.commitment}, restart_dead={self.restart_dead}, "
                f"dead_threshold={self.dead_threshold}")

    # -- lookups ----------------------------------------------------------------------------------
    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D, *spatial) -> (M, D) float32, M = N * prod(spatial)."""
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating tensor (N, {self.code_dim}, ...), got "
                            f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
        if z.ndim < 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"z must have shape (N, {self.code_dim}, ...) (code_dim channels on dim 1), "
                             f"got {tuple(z.shape)}")
        return z.detach().float().movedim(1, -1).reshape(-1, self.code_dim)

    def distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared distances (M, K) float32 of vectors (M, D) to every code."""
        flat = flat.float()
        codebook = self.codebook.float()
        with torch.autocast(flat.device.type, enabled=False):
            return torch.addmm(codebook.pow(2).sum(1).unsqueeze(0) + flat.pow(2).sum(1, keepdim=True),
                               flat, codebook.t(), alpha=-2.0)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (N, *spatial) int64 of the nearest codebook entries to z (N, D, *spatial)."""
        flat = self._flat(z)
        return self.distances(flat).argmin(1).view(z.shape[0], *z.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (N, D, *spatial) float32 for codes (N, *spatial) int64."""
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"codes must be an integer tensor, got "
                            f"{codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(f"codes must be in [0, {self.num_codes}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return self.codebook[codes.long()].movedim(-1, 1)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, update: bool | None = None):
        flat = self._flat(z)  # (M, D) float32, detached
        update = self.training if update is None else check_bool("update", update)
        if update and not bool(self.initialized):
            self._initialize(flat)
        codes_flat = self.distances(flat).argmin(1)  # (M,)
        counts = torch.bincount(codes_flat, minlength=self.num_codes).float()  # (K,)
        if update:
            self._ema_update(flat, codes_flat, counts)
        quantized = self.codebook[codes_flat].view(z.shape[0], *z.shape[2:], self.code_dim).movedim(-1, 1)
        quantized = quantized.to(z.dtype)
        commitment = self.commitment * (z.float() - quantized.float()).pow(2).mean()
        # straight-through estimator: the value is exactly the code (z - z is 0), the gradient the identity
        quantized = quantized + (z - z.detach())
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        stats = {"commitment": commitment, "perplexity": entropy.exp().detach(),
                 "usage": (counts > 0).float().mean().detach()}
        return quantized, codes_flat.view(z.shape[0], *z.shape[2:]), stats

    # -- codebook maintenance ---------------------------------------------------------------------
    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _random_rows(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """`count` random rows of flat (with replacement when flat has fewer rows)."""
        if flat.shape[0] >= count:
            index = torch.randperm(flat.shape[0], device=flat.device)[:count]
        else:
            index = torch.randint(0, flat.shape[0], (count,), device=flat.device)
        rows = flat[index].clone()
        if self._distributed():
            dist.broadcast(rows, 0)
        return rows

    @torch.no_grad()
    def _initialize(self, flat: torch.Tensor) -> None:
        """Codebook <- random input vectors of the first training batch; counts 1."""
        rows = self._random_rows(flat, self.num_codes)
        self.codebook.copy_(rows)
        self.embed_sum.copy_(rows)
        self.cluster_size.fill_(1.0)
        self.unused_steps.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)  # (K, D)
        if self._distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_dead:
            dead = (self.unused_steps >= self.dead_threshold).nonzero().flatten()
            if dead.numel():
                rows = self._random_rows(flat, dead.numel())
                self.codebook[dead] = rows
                self.embed_sum[dead] = rows
                self.cluster_size[dead] = 1.0
                self.unused_steps[dead] = 0


__all__ = ["VectorQuantizer"]

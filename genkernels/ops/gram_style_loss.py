"""The Gram-matrix style loss of neural style transfer (Gatys et al., 2016), forward and backward in
one op that keeps no Gram graph:

    F     = features.flatten(2)                     (B, C, N = H W)
    G     = F F^T / n                               (B, C, C),  n = C H W ("chw"), H W ("hw") or 1 ("none")
    loss  = weight * mean_{b,i,j} (G - T)^2         T = target_gram, (C, C) broadcast over B or (B, C, C)

The gradients, with D = G - T and M = B C^2 elements:

    dL/dG = 2 w D / M   ->   dL/dF = (dL/dG + dL/dG^T) F / n = 2 w / (M n) (D + D^T) F
                             (= 4 w / (M n) D F for a symmetric target, as a Gram matrix is)
    dL/dT = -2 w D / M  (summed over B when T was broadcast)

So a training step costs two (C x N) by (N x C)-sized matmuls where autograd's bmm backward runs
three (it forms dG F and dG^T F separately and adds them: two temporaries of F's size at the
backward's peak). The op saves only F (the input itself) and D (B, C, C, fp32) for the backward,
as much as autograd keeps (bmm saves F too); the saving is the backward's peak: measured for
(1, 64, 256, 256) fp32 on CPU, 16 MiB above the inputs (the gradient alone) against 48 MiB eager
and 16-32 MiB for torch.compile of the reference (genkernels bench --suite style).
Both matmuls are torch's baddbmm with the 1/n (and 2 w / (M n)) scaling as the GEMM's alpha, so
fp16/bf16 products are scaled while still in the GEMM's fp32 accumulator: F F^T of a 256x256 map
would overflow fp16 before a separate division. D and the loss are computed in fp32 (float64 for
float64 inputs) and the loss is returned in that dtype.

There is no Triton kernel: the work is two GEMMs, which cuBLAS / MKL already run well, and the
elementwise part is on (B, C, C), a few hundred KiB. A kernel of our own could compute only the
upper triangle of G (half the forward FLOPs), but these GEMMs are short and wide (C = 64..512 rows,
N = H W up to 65536 columns reduced): one 64x64 output tile per image at C = 64, so it would need a
split-K reduction tuned on a GPU to beat cuBLAS's split-K; left for when one can be measured.
The op is pure PyTorch, registered with torch.library (fullgraph torch.compile, opcheck) with its
own backward op.

Reading order: reference -> forward / backward -> torch.library op + autograd -> public functions.
"""
from __future__ import annotations

import torch

from genkernels.ops import _args as args
from genkernels.ops._library import define

NORMALIZATIONS = ("chw", "hw", "none")


# ---- reference --------------------------------------------------------------------------------
def _norm(features: torch.Tensor, normalize: str) -> float:
    _, c, h, w = features.shape
    return float({"chw": c * h * w, "hw": h * w, "none": 1}[normalize])


def gram_matrix_ref(features, normalize="chw"):
    """F F^T / n by autograd-differentiable torch ops, in the features' dtype: (B, C, C)."""
    f = features.flatten(2)  # (B, C, N)
    return f @ f.transpose(1, 2) / _norm(features, normalize)


def gram_style_loss_ref(features, target_gram, weight=1.0, normalize="chw"):
    """weight * mean((gram(features) - target_gram)^2) by autograd, in the features' dtype."""
    return weight * (gram_matrix_ref(features, normalize) - target_gram).pow(2).mean()


# ---- forward and backward -----------------------------------------------------------------------
def _acc(t):
    return torch.promote_types(t.dtype, torch.float32)


def _gram(features, inv_n):
    """(B, C, C) F F^T * inv_n in the features' dtype, the scaling inside the GEMM (baddbmm's alpha)."""
    f = features.flatten(2)  # (B, C, N)
    out = f.new_empty(f.shape[0], f.shape[1], f.shape[1])
    return torch.baddbmm(out, f, f.transpose(1, 2), beta=0.0, alpha=inv_n)


def _forward(features, target_gram, weight, inv_n):
    """(loss 0-d, diff = G - T (B, C, C)), both in fp32 (float64 for float64 features)."""
    diff = _gram(features, inv_n).to(_acc(features)) - target_gram.to(_acc(features))  # (B, C, C)
    loss = diff.square().mean() * weight
    return loss, diff.contiguous()


def _backward(grad_loss, features, diff, weight, inv_n, target_batched, need_features, need_target):
    """(grad_features like features, grad_target (B, C, C) or (C, C) in fp32, or empty tensors when
    not needed): 2 w / (M n) (D + D^T) F and -2 w / M D."""
    b, c = diff.shape[0], diff.shape[1]
    coefficient = weight / max(b * c * c, 1)  # w / M
    scaled = diff * grad_loss.to(diff.dtype)  # (B, C, C)
    grad_features = features.new_empty(0)
    if need_features:
        f = features.flatten(2)  # (B, C, N)
        # D + D^T: a target that is not symmetric (no Gram matrix) makes D asymmetric too.
        # 2 w / (M n) as the GEMM's alpha, not folded into D: w / M is ~1e-5 at C = 256, and
        # D w / M would underflow in fp16 before the product
        symmetric = (scaled + scaled.transpose(1, 2)).to(features.dtype)  # (B, C, C)
        grad_features = torch.baddbmm(f.new_empty(f.shape), symmetric, f, beta=0.0,
                                      alpha=2.0 * coefficient * inv_n)
        grad_features = grad_features.view(features.shape)
    grad_target = diff.new_empty(0)
    if need_target:
        grad_target = scaled * (-2.0 * coefficient)
        if not target_batched:
            grad_target = grad_target.sum(0)
    return grad_features, grad_target


# ---- torch.library op + autograd ----------------------------------------------------------------
def _fake(features, target_gram, weight, inv_n):
    b, c = features.shape[0], features.shape[1]
    acc = _acc(features)
    return features.new_empty((), dtype=acc), features.new_empty((b, c, c), dtype=acc)


def _backward_fake(grad_loss, features, diff, weight, inv_n, target_batched, need_features, need_target):
    grad_features = (torch.empty_like(features, memory_format=torch.contiguous_format) if need_features
                     else features.new_empty(0))
    shape = tuple(diff.shape) if target_batched else tuple(diff.shape[1:])
    grad_target = diff.new_empty(shape) if need_target else diff.new_empty(0)
    return grad_features, grad_target


def _setup_context(ctx, inputs, output):
    features, target_gram, weight, inv_n = inputs
    ctx.save_for_backward(features, output[1])  # F itself and D = G - T: no Gram graph
    ctx.options = (weight, inv_n, target_gram.dim() == 3)
    ctx.target_dtype = target_gram.dtype


def _autograd_backward(ctx, grad_loss, _grad_diff):
    features, diff = ctx.saved_tensors
    need_features, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gf, gt = gram_style_loss_backward_op(grad_loss, features, diff, *ctx.options, need_features, need_target)
    return (gf if need_features else None, gt.to(ctx.target_dtype) if need_target else None, None, None)


gram_style_loss_op = define(
    "gram_style_loss(Tensor features, Tensor target_gram, float weight, float inv_n) -> (Tensor, Tensor)",
    impl=_forward, fake=_fake, setup_context=_setup_context, backward=_autograd_backward)
gram_style_loss_backward_op = define(
    "gram_style_loss_backward(Tensor grad_loss, Tensor features, Tensor diff, float weight, float inv_n, "
    "bool target_batched, bool need_features, bool need_target) -> (Tensor, Tensor)",
    impl=_backward, fake=_backward_fake)


# ---- public functions ---------------------------------------------------------------------------
def _check_normalize(normalize):
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"gram_style_loss: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def _check_features(features, fn):
    args.check_tensor("features", features)
    if features.dim() != 4:
        raise ValueError(f"{fn}: features must be (B, C, H, W), got shape {tuple(features.shape)}")


def gram_matrix(features: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """The Gram matrices of feature maps, F F^T / n with F = features.flatten(2):
    features (B, C, H, W) -> (B, C, C) in the features' dtype (n: see gram_style_loss). For style
    targets: `target = gram_matrix(extractor(style_image)[layer])`. Differentiable by autograd."""
    _check_features(features, "gram_matrix")
    _check_normalize(normalize)
    return _gram(features, 1.0 / _norm(features, normalize))


def gram_style_loss(features: torch.Tensor, target_gram: torch.Tensor, weight: float = 1.0,
                    normalize: str = "chw") -> torch.Tensor:
    """Weighted mean squared error between the Gram matrices of `features` and a target Gram:

        weight * mean_{b,i,j} (F_b F_b^T / n - T)_ij^2,   F_b = features[b].reshape(C, H W)

    features     (B, C, H, W) float32 / float16 / bfloat16 / float64
    target_gram  (C, C) (one style for the whole batch) or (B, C, C), floating, on features' device
    weight       float multiplier of the loss
    normalize    n = C H W ("chw", Gatys et al.'s 1 / (4 N^2 M^2) up to a constant), H W ("hw") or 1 ("none")
    Returns the 0-dim loss in float32 (float64 for float64 features). Differentiable with respect to
    features and target_gram; the backward needs only the features and G - T (no Gram graph).
    """
    _check_features(features, "gram_style_loss")
    _check_normalize(normalize)
    b, c = features.shape[0], features.shape[1]
    if not isinstance(target_gram, torch.Tensor):
        raise TypeError(f"gram_style_loss: target_gram must be a torch.Tensor, got {type(target_gram).__name__}")
    if not target_gram.is_floating_point():
        raise TypeError(f"gram_style_loss: target_gram must be a floating tensor, got {target_gram.dtype}")
    if tuple(target_gram.shape) not in ((c, c), (b, c, c)):
        raise ValueError(f"gram_style_loss: target_gram must be (C, C) = ({c}, {c}) or (B, C, C) = ({b}, {c}, {c}), "
                         f"got {tuple(target_gram.shape)}")
    if target_gram.device != features.device:
        raise ValueError(f"gram_style_loss: target_gram must be on features' device {features.device}, "
                         f"got {target_gram.device}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"gram_style_loss: weight must be a float, got {type(weight).__name__}")
    return gram_style_loss_op(features, target_gram, float(weight), 1.0 / _norm(features, normalize))[0]

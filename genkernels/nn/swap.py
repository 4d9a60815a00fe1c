"""`swap_layers(model)`: put the genkernels layers into any existing PyTorch model, keeping its weights.

Replaced, by exact type (a subclass may override forward, so it is left alone and reported):

  torch.nn.MultiheadAttention -> genkernels.nn.MultiheadAttention (same arguments, parameters and
                                 state-dict keys; calls the op cannot express fall back to torch's
                                 own F.multi_head_attention_forward inside it)
  torch.nn.LayerNorm          -> genkernels.nn.LayerNorm   (over the last dim only)
  torch.nn.RMSNorm            -> genkernels.nn.RMSNorm     (over the last dim only)

This covers the self_attn / multihead_attn / norm1..norm3 children of nn.TransformerEncoderLayer /
DecoderLayer, and so nn.TransformerEncoder / Decoder / Transformer. The new modules take the old
ones' Parameter objects themselves (and the MHA's out_proj module), so device, dtype,
requires_grad, an optimizer's references to them and the state-dict keys all stay as they were;
train/eval mode and the settings (eps, elementwise_affine, bias, batch_first, dropout, kdim, vdim,
add_bias_kv, add_zero_attn) are copied. A module shared under several names stays shared.

torch's inference fast path: in eval mode without gradients, nn.TransformerEncoderLayer runs the
whole layer as one native kernel (torch._transformer_encoder_layer_fwd) reading self_attn's and the
norms' weights directly, and nn.TransformerEncoder turns padded batches into nested tensors for it.
That path would never run the swapped layers (and needs MultiheadAttention.merge_masks), so for
every encoder layer with a swapped child it is switched off (activation_relu_or_gelu = 0, read only
by those checks) and so is the nested-tensor conversion of the encoder holding it
(use_nested_tensor = False); the report lists them. Results are unchanged: the regular path
computes the same layer.

Left alone and reported: LayerNorm / RMSNorm over several trailing dims, modules with
parametrizations or forward/backward hooks (the hooks would be lost), subclasses.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter

import torch
from torch import nn

from genkernels.nn.attention import MultiheadAttention
from genkernels.nn.transformer_layers import LayerNorm, RMSNorm

_TORCH_TYPES = {nn.MultiheadAttention: "attention", nn.LayerNorm: "norms", nn.RMSNorm: "norms"}
_NEW_TYPE = {nn.MultiheadAttention: MultiheadAttention, nn.LayerNorm: LayerNorm, nn.RMSNorm: RMSNorm}


@dataclasses.dataclass
class SwapReport:
    """What swap_layers did.

    model              the model with the layers swapped (the same object when inplace, unless
                       the model itself was one of the replaced layers)
    replaced           qualified name -> "torch.nn.X -> genkernels.nn.X" ("" is the model itself)
    skipped            qualified name -> why it was left alone
    fastpath_disabled  qualified name -> which torch fast path was switched off there
    """

    model: nn.Module
    replaced: dict[str, str] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    fastpath_disabled: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Replaced modules per torch type, e.g. {"MultiheadAttention": 6, "LayerNorm": 13}."""
        return dict(Counter(kind.split(" -> ")[0].rsplit(".", 1)[-1] for kind in self.replaced.values()))

    @property
    def num_replaced(self) -> int:
        return len(self.replaced)

    def summary(self, limit: int | None = 20) -> str:
        """One headline, then the names (at most `limit` per section; None: all)."""
        counts = ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items())) or "nothing"
        lines = [f"swap_layers: replaced {self.num_replaced} module(s) ({counts}), skipped {len(self.skipped)}, "
                 f"torch fast path disabled on {len(self.fastpath_disabled)}"]
        for title, entries in (("replaced", self.replaced), ("skipped", self.skipped),
                               ("fast path off", self.fastpath_disabled)):
            items = list(entries.items())
            shown = items if limit is None else items[:limit]
            lines += [f"  {title:13s} {name or '(model)'}: {what}" for name, what in shown]
            if len(shown) < len(items):
                lines.append(f"  {title:13s} ... and {len(items) - len(shown)} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    __str__ = __repr__


def _qualified(cls) -> str:
    module = "torch.nn" if cls.__module__.startswith("torch.nn") else (
        "genkernels.nn" if cls.__module__.startswith("genkernels.nn") else cls.__module__)
    return f"{module}.{cls.__name__}"


def _why_not(module: nn.Module) -> str | None:
    """None when `module` (exactly one of the torch types) can be swapped; else the reason."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module):
        return "has parametrizations (e.g. weight_norm / spectral_norm); left as is"
    hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                         "_state_dict_hooks", "_load_state_dict_pre_hooks") if getattr(module, h, None)]
    if hooks:
        return f"has hooks ({', '.join(h.strip('_') for h in hooks)}) that the new module would lose"
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and len(module.normalized_shape) != 1:
        return (f"normalizes over {len(module.normalized_shape)} trailing dims {tuple(module.normalized_shape)}; "
                f"genkernels.nn.{type(module).__name__} covers the last dim only")
    return None


def _take(new: nn.Module, old: nn.Module, names) -> None:
    """new's parameters `names` become old's Parameter objects (or None, as old has them)."""
    for name in names:
        new._parameters[name] = old._parameters.get(name)


def _convert(old: nn.Module) -> nn.Module:
    """The genkernels module for `old`, built on the meta device and then given old's parameters."""
    cls = type(old)
    if cls is nn.MultiheadAttention:
        new = MultiheadAttention(old.embed_dim, old.num_heads, dropout=old.dropout, bias=old.in_proj_bias is not None,
                                 add_bias_kv=old.bias_k is not None, add_zero_attn=old.add_zero_attn, kdim=old.kdim,
                                 vdim=old.vdim, batch_first=old.batch_first, device="meta")
        _take(new, old, ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"))
        new.out_proj = old.out_proj
        new.bias_k, new.bias_v = old.bias_k, old.bias_v
    elif cls is nn.LayerNorm:
        new = LayerNorm(old.normalized_shape[0], eps=old.eps, elementwise_affine=old.elementwise_affine,
                        bias=old.bias is not None, device="meta")
        _take(new, old, ("weight", "bias"))
    else:
        new = RMSNorm(old.normalized_shape[0], eps=old.eps, elementwise_affine=old.elementwise_affine, device="meta")
        _take(new, old, ("weight",))
    new.train(old.training)
    left = [name for name, t in itertools.chain(new.named_parameters(), new.named_buffers()) if t.is_meta]
    if left or set(new.state_dict()) != set(old.state_dict()):
        raise RuntimeError(f"swap_layers: the {_qualified(cls)} -> {_qualified(type(new))} conversion did not carry "
                           f"every tensor over (unfilled: {left}; keys {list(new.state_dict())} vs "
                           f"{list(old.state_dict())}); please report this")
    return new


def _is_swapped(module) -> bool:
    return isinstance(module, (MultiheadAttention, LayerNorm, RMSNorm))


def _disable_fastpaths(module: nn.Module, name: str, report: SwapReport) -> None:
    """Switch off torch's fused encoder-layer path where it would bypass (or break on) swapped children."""
    if isinstance(module, nn.TransformerEncoderLayer):
        swapped = any(_is_swapped(getattr(module, child, None)) for child in ("self_attn", "norm1", "norm2"))
        if swapped and getattr(module, "activation_relu_or_gelu", 0):
            module.activation_relu_or_gelu = 0
            report.fastpath_disabled[name] = ("torch._transformer_encoder_layer_fwd (eval, no grad) would bypass "
                                              "the swapped layers; activation_relu_or_gelu set to 0")
    elif isinstance(module, nn.TransformerEncoder):
        swapped = any(_is_swapped(child) for layer in module.layers for child in layer.children())
        if swapped and getattr(module, "use_nested_tensor", False):
            module.use_nested_tensor = False
            report.fastpath_disabled[name] = "nested-tensor conversion of padded batches; use_nested_tensor = False"


def _walk(module: nn.Module, prefix: str, wanted: dict, memo: dict, report: SwapReport) -> None:
    for child_name, child in list(module._modules.items()):
        if child is None:
            continue
        name = f"{prefix}.{child_name}" if prefix else child_name
        new = _visit(child, name, wanted, memo, report)
        if new is not child:
            module._modules[child_name] = new
    _disable_fastpaths(module, prefix, report)


def _visit(module: nn.Module, name: str, wanted: dict, memo: dict, report: SwapReport) -> nn.Module:
    """The module to put at `name`: a swapped one, or `module` itself (its children visited)."""
    if id(module) in memo:  # shared under another name: the same replacement, visited once
        return memo[id(module)]
    memo[id(module)] = module
    cls = type(module)
    if cls in _TORCH_TYPES:
        if not wanted[_TORCH_TYPES[cls]]:
            return module
        reason = _why_not(module)
        if reason is not None:
            report.skipped[name] = reason
            return module
        new = _convert(module)
        memo[id(module)] = new
        report.replaced[name] = f"{_qualified(cls)} -> {_qualified(type(new))}"
        return new
    base = next((t for t in _TORCH_TYPES if isinstance(module, t)), None)
    if base is not None and wanted[_TORCH_TYPES[base]] and not _is_swapped(module):
        report.skipped[name] = (f"{_qualified(cls)} subclasses {_qualified(base)} and may override forward; "
                                f"left as is")
        return module
    _walk(module, name, wanted, memo, report)
    return module


def swap_layers(model: nn.Module, *, attention: bool = True, norms: bool = True, inplace: bool = True) -> SwapReport:
    """Replace torch.nn.MultiheadAttention (attention=True) and torch.nn.LayerNorm / RMSNorm
    (norms=True) inside `model` with the genkernels layers, keeping their weights; see the module
    docstring for the details. inplace=False works on a deep copy and leaves `model` untouched.

    Returns a SwapReport: `.model` (use it: it is `model` itself when inplace, unless the model is
    itself one of the replaced layers), `.replaced` / `.skipped` / `.fastpath_disabled` (qualified
    name -> what / why), `.counts`, and a readable summary as its repr. A second call replaces nothing.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for arg, value in (("attention", attention), ("norms", norms), ("inplace", inplace)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} must be a bool, got {type(value).__name__} {value!r:.40}")
    if not inplace:
        model = copy.deepcopy(model)
    report = SwapReport(model)
    report.model = _visit(model, "", {"attention": attention, "norms": norms}, {}, report)
    return report


__all__ = ["swap_layers", "SwapReport"]

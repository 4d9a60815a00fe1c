"""Host-side cost of one attention call on a GPU, split by layer (tiny shapes: the GPU work is a few
microseconds, so the wall time per call is the host's).

    python bench/attention_overhead.py

Rows: the raw Triton launchers (kernels.attention_forward / attention_backward with no wrapper),
the same through torch.library's wrap_triton, the registered op, the routed op (ops/_library: the
kernels directly when nothing traces and no gradient is needed), and the public function with and
without autograd; SDPA (flash) beside them.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch.library import wrap_triton

from genkernels.kernels import attention as kernels
from genkernels.ops.attention import attention, attention_forward_op


def per_call_us(fn, calls=200, repeat=7):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main():
    q, k, v, do = (torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    out, lse = torch.empty_like(q), torch.empty(1, 2, 128, device="cuda")
    delta = torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    scale = 64 ** -0.5

    def fwd(wrap):
        return lambda: kernels.attention_forward(wrap, q, k, v, out, lse, None, None, None, 1, 128, 128, scale,
                                                 True, False, False)

    def bwd(wrap):
        return lambda: kernels.attention_backward(wrap, do, q, k, v, out, lse, None, delta, dq, dk, dv, None, None,
                                                  None, 1, 128, 128, scale, True, False, False)

    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def public_fwd_bwd():
        torch.autograd.grad(attention(qg, kg, vg, causal=True), (qg, kg, vg), do)

    def sdpa_fwd_bwd():
        o = F.scaled_dot_product_attention(qg.transpose(1, 2), kg.transpose(1, 2), vg.transpose(1, 2), is_causal=True)
        torch.autograd.grad(o, (qg, kg, vg), do.transpose(1, 2))

    cases = {
        "forward launcher, direct": fwd(lambda f: f),
        "forward launcher, wrap_triton": fwd(wrap_triton),
        "backward launchers (3 kernels), direct": bwd(lambda f: f),
        "backward launchers (3 kernels), wrap_triton": bwd(wrap_triton),
        "torch.ops.genkernels.attention_forward": lambda: torch.ops.genkernels.attention_forward(
            q, k, v, None, None, None, 128, 128, scale, True, False),
        "routed op (ops/_library route 1), no grad": lambda: attention_forward_op(
            q, k, v, None, None, None, 128, 128, scale, True, False),
        "public attention(), no grad": lambda: attention(q, k, v, causal=True),
        "public attention(), forward + backward": public_fwd_bwd,
        "SDPA, no grad": lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                v.transpose(1, 2), is_causal=True),
        "SDPA, forward + backward": sdpa_fwd_bwd,
    }
    width = max(map(len, cases))
    print(f"{'case'.ljust(width)}  us/call")
    for name, fn in cases.items():
        print(f"{name.ljust(width)}  {per_call_us(fn):8.1f}")


if __name__ == "__main__":
    main()

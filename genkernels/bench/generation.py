"""`genkernels bench --suite generation`: the GPT's cached generation, fused loss and training speed.

Three tables, measured in one run (float32, batch 1 for generation; torch threads as run_suite is
given, 1 by default on a CPU so that a shared machine's load disturbs it least). Every time is the
process's CPU time when a CPU runs one torch thread (column "clock"; see _clock), wall time otherwise:

generation  GPT.generate (greedy, KV cache through attention_decode: prefill once, then one token's
            work per step) against GPT.generate_uncached (the nanoGPT/minGPT loop: the whole context
            re-run for every token), for 128 / 512 / 2048 new tokens after a 16-token prompt, the
            default GPTConfig with context = prompt + the longest length. Cached: whole `generate`
            calls (median of `repeat` at 128 tokens, one call at the longer lengths). Recompute: its
            cost per token grows with the context, so one step (the full forward over c tokens + head
            + argmax, what generate_uncached does per token) is timed at `points` context lengths
            spread over [prompt, prompt + n) and the total integrated with the trapezoid rule
            ("integrated"); for lengths up to `measure_up_to` (default 512) the whole
            generate_uncached call is timed instead ("measured"; recompute_estimate_error compares the
            integral with it) after checking that both generators give the same tokens. On a 2-core
            CPU a measured 2048-token recompute would take many minutes (2,048 forwards of up to
            2,063 tokens), so that row is the integrated one.
lce         genkernels.ops.linear_cross_entropy (chunked, gradients formed in the forward; and the
            variant recomputing the logits in backward) against F.cross_entropy on the materialised
            float32 logits, forward + backward at N = 4096 tokens (a 16 x 256 batch) x D = 256 x V = 32k / 64k / 128k, each
            provider in a fresh subprocess: peak memory above the inputs of one call made after a tiny
            warm-up call that loads the kernels (transformer_ops.lce_rows' accounting: the growth of
            the peak resident set, VmHWM, on a CPU; torch.cuda.max_memory_allocated on CUDA). On a CPU
            the child runs with glibc's mmap threshold fixed at 64 KiB (freed large blocks leave the
            resident set at once, so freed temporaries are not reused unseen) and its VmHWM reset
            once the inputs exist (/proc/self/clear_refs). ms: that call's time on a CPU (its large
            tensors are fresh mappings, as in any call: glibc maps blocks over 32 MiB afresh anyway),
            the median of further calls on CUDA. extra_MiB: the peak less the gradients d hidden +
            d weight (N D + V D floats), which every method must hold; extra_ratio: materialised's
            extra over this one's, the memory the loss itself needs.
train       GPT training steps (loss forward + backward + AdamW), tokens/s, eager against
            torch.compile of the loss (as the trainer's --compile), from the same weights; the two
            first-step losses are checked to agree. Compilation is excluded (warm-up steps).
"""
from __future__ import annotations

import copy
import statistics
import sys
import time

import torch

from genkernels.bench.timing import synchronize
from genkernels.models.gpt import GPT, GPTConfig

PROMPT = 16
LENGTHS = (128, 512, 2048)
LCE_SHAPES = ((4096, 256, 32768), (4096, 256, 65536), (4096, 256, 131072))  # (N, D, V): N = a 16 x 256 batch
TRAIN = (8, 256)  # (batch, tokens per sequence) = the default GPT context
TINY = {"lengths": (8, 24), "config": dict(dim=32, depth=2, num_heads=2), "lce": ((64, 16, 512),),
        "train": (2, 16), "points": 3}
GEN_COLUMNS = ["tokens", "prompt", "cached_tokens_per_s", "recompute_tokens_per_s", "speedup", "recompute_method",
               "recompute_estimate_error", "cached_ms_per_token", "recompute_ms_last_token", "threads"]
LCE_COLUMNS = ["provider", "shape", "ms", "peak_MiB", "memory_ratio", "extra_MiB", "extra_ratio",
               "speedup_vs_materialised", "threads"]
TRAIN_COLUMNS = ["provider", "batch", "seq_len", "ms_per_step", "tokens_per_s", "speedup_vs_eager", "threads"]


def _clock(device):
    """The clock of every timing here: on a CPU with one torch thread, this process's CPU time
    (time.process_time), which the other jobs of a shared machine do not inflate (they do with wall
    time: a load average of 6 on 2 cores moved wall-clock ratios 2x between runs); else wall time."""
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        return time.process_time
    return time.perf_counter


def clock_name(device) -> str:
    return "process CPU time" if _clock(device) is time.process_time else "wall time"


def _median_seconds(fn, repeat: int, device) -> float:
    clock = _clock(device)
    samples = []
    for _ in range(repeat):
        synchronize(device)
        start = clock()
        fn()
        synchronize(device)
        samples.append(clock() - start)
    return statistics.median(samples)


def _model(config: dict, context: int, device) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(context=context, **config)).to(device).eval()


# ---- generation: cached vs recompute ---------------------------------------------------------------
def recompute_step_seconds(model: GPT, context_len: int, repeat: int = 3) -> float:
    """Seconds of one generate_uncached step at a context of context_len tokens (forward over all of
    them, the last position's logits, argmax)."""
    device = model.head_weight.device
    seq = torch.randint(0, model.config.vocab_size, (1, context_len), generator=torch.Generator().manual_seed(1))
    seq = seq.to(device)

    @torch.no_grad()
    def step():
        last = model.hidden(seq)[:, -1]
        return (last @ model.head_weight.t()).float().argmax(dim=-1)

    step()  # warm-up
    return _median_seconds(step, repeat, device)


def integrated_recompute_seconds(model: GPT, prompt: int, tokens: int, points: int = 8, repeat: int = 3,
                                 cache: dict | None = None) -> tuple[float, float]:
    """(estimated seconds of generate_uncached for `tokens` new tokens after `prompt`, the last step's
    seconds): step times at `points` context lengths over [prompt, prompt + tokens - 1], trapezoid sum."""
    cache = {} if cache is None else cache
    last = prompt + tokens - 1
    lengths = sorted({round(prompt + i * (last - prompt) / max(points - 1, 1)) for i in range(points)})
    for c in lengths:
        if c not in cache:
            cache[c] = recompute_step_seconds(model, c, repeat)
    total = 0.0
    for a, b in zip(lengths, lengths[1:]):
        total += (b - a) * (cache[a] + cache[b]) / 2  # steps at contexts a .. b-1, linear in between
    total += cache[last]  # the step at the last context
    return total, cache[last]


def generation_rows(device="cpu", lengths=LENGTHS, config: dict | None = None, prompt: int = PROMPT,
                    measure_up_to: int = 512, points: int = 8, repeat: int = 3) -> list[dict]:
    device = torch.device(device)
    model = _model(config or {}, prompt + max(lengths), device)
    prompt_tokens = torch.randint(0, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    prompt_tokens = prompt_tokens.to(device)
    model.generate(prompt_tokens, 8, temperature=0)  # warm-up
    cache, rows = {}, []
    for n in lengths:
        cached_out = []
        cached = _median_seconds(lambda: cached_out.append(model.generate(prompt_tokens, n, temperature=0)),
                                 repeat if n <= 128 else 1, device)  # long calls average the noise themselves
        estimate, last_step = integrated_recompute_seconds(model, prompt, n, points, repeat, cache)
        row = {"tokens": n, "prompt": prompt, "threads": torch.get_num_threads(), "clock": clock_name(device),
               "cached_tokens_per_s": n / cached, "cached_ms_per_token": cached / n * 1e3,
               "recompute_ms_last_token": last_step * 1e3, "recompute_estimate_error": None}
        if n <= measure_up_to:
            clock = _clock(device)
            start = clock()
            uncached_out = model.generate_uncached(prompt_tokens, n)
            synchronize(device)
            measured = clock() - start
            if uncached_out != cached_out[0]:
                raise AssertionError(f"cached and recomputed greedy generation disagree at {n} tokens")
            row.update(recompute_method="measured", recompute_seconds=measured,
                       recompute_estimate_error=estimate / measured - 1)
        else:
            row.update(recompute_method=f"integrated ({points} context lengths)", recompute_seconds=estimate)
        row["recompute_tokens_per_s"] = n / row["recompute_seconds"]
        row["speedup"] = row["recompute_seconds"] / cached
        row["config"] = {k: v for k, v in vars(model.config).items()}
        rows.append(row)
    return rows


# ---- training tokens/s: eager vs torch.compile of the loss -------------------------------------
def train_rows(device="cpu", shape=TRAIN, config: dict | None = None, steps: int = 5, warmup: int = 2,
               with_compile: bool = True) -> list[dict]:
    device = torch.device(device)
    batch, seq_len = shape
    base = _model(config or {}, seq_len, device).train()
    data = torch.randint(0, base.config.vocab_size, (steps + warmup, batch, seq_len + 1),
                         generator=torch.Generator().manual_seed(2)).to(device)
    providers = ["eager"] + (["compile"] if with_compile else [])
    rows, first_losses = [], {}
    for provider in providers:
        model = copy.deepcopy(base)
        loss_fn = (lambda b, m=model: m.loss(b)["loss"])
        if provider == "compile":
            loss_fn = torch.compile(loss_fn)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        for i in range(warmup + steps):
            synchronize(device)
            start = _clock(device)()
            loss = loss_fn(data[i])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            times.append(_clock(device)() - start)
            if i == 0:
                first_losses[provider] = float(loss.detach())
        seconds = statistics.median(times[warmup:])
        rows.append({"provider": provider, "batch": batch, "seq_len": seq_len, "ms_per_step": seconds * 1e3,
                     "tokens_per_s": batch * seq_len / seconds, "threads": torch.get_num_threads(),
                     "clock": clock_name(device),
                     "first_loss": first_losses[provider]})
    if "compile" in first_losses and abs(first_losses["compile"] - first_losses["eager"]) > 1e-3:
        raise AssertionError(f"compiled and eager GPT losses disagree: {first_losses}")
    for r in rows:
        r["speedup_vs_eager"] = rows[0]["ms_per_step"] / r["ms_per_step"]
    return rows


# ---- linear + cross-entropy at large vocabularies: time and peak memory ----------------------------
LCE_PROVIDERS = ("materialised", "chunked", "chunked_recompute")


def _lce_child(provider, n, d, v, device, threads, repeat) -> dict:
    """In a fresh process: peak memory of one forward + backward (transformer_ops' accounting), then
    the median of `repeat` timed calls."""
    from genkernels.bench.transformer_ops import _lce_inputs, _lce_step, _peak_rss

    torch.set_num_threads(threads)
    _lce_step(provider, *_lce_inputs(8, 8, 64, device))  # one-time costs (kernel loading) before measuring
    h, w, t = _lce_inputs(n, d, v, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _lce_step(provider, h, w, t)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _reset_peak_rss()
        clock = _clock(device)
        start = clock()
        _lce_step(provider, h, w, t)
        first = clock() - start
        peak = _peak_rss() - base
    if device.type == "cuda" or repeat > 0:
        first = _median_seconds(lambda: _lce_step(provider, h, w, t), max(repeat, 1), device)
    seconds = first
    return {"peak_bytes": peak, "seconds": seconds}


def _reset_peak_rss() -> int:
    """Reset this process's peak resident set (VmHWM) to the current one (Linux >= 4.0,
    /proc/self/clear_refs) and return it; where that is impossible, the peak so far (as
    transformer_ops measures)."""
    from genkernels.bench.transformer_ops import _peak_rss

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return _peak_rss()


def lce_rows(device, shape, repeat: int = 0) -> list[dict]:
    """transformer_ops.lce_rows' table (its columns, plus extra_MiB / extra_ratio) with `repeat` timed
    calls after the peak-memory call (0: on a CPU the peak-memory call's own time), so that V = 128k
    fits a shared CPU's time budget."""
    import json
    import os
    import subprocess

    n, d, v = shape
    threads = torch.get_num_threads()
    out = {}
    for provider in LCE_PROVIDERS:
        cmd = [sys.executable, "-m", "genkernels.bench.generation", "lce", provider, str(n), str(d), str(v),
               str(device), str(threads), str(repeat)]
        # glibc returns freed blocks >= 64 KiB to the system at once (a fixed mmap threshold), so
        # the resident set follows the live tensors: freed temporaries (the inputs' randn) are not
        # reused unseen, and the peak is reset after the inputs exist
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out[provider] = json.loads(res.stdout.strip().splitlines()[-1])
    grads = (n * d + v * d) * 4  # d hidden and d weight (float32): outputs every method must hold
    extra = {p: max(r["peak_bytes"] - grads, 1) for p, r in out.items()}
    return [{"op": "linear_cross_entropy fwd_bwd", "provider": provider, "threads": threads,
             "shape": f"N{n} D{d} V{v}", "dtype": "float32", "ms": r["seconds"] * 1e3,
             "peak_MiB": r["peak_bytes"] / 2 ** 20,
             "memory_ratio": out["materialised"]["peak_bytes"] / max(r["peak_bytes"], 1),
             "extra_MiB": extra[provider] / 2 ** 20, "extra_ratio": extra["materialised"] / extra[provider],
             "speedup_vs_materialised": out["materialised"]["seconds"] / r["seconds"],
             "clock": clock_name(device)}
            for provider, r in out.items()]


def run_suite(device="cpu", with_compile: bool = True, threads: int | None = 1, tiny: bool = False) -> dict:
    """{"generation": rows, "lce": rows, "train": rows}; threads: torch CPU threads (None: as is);
    tiny: small shapes for the tests."""
    device = torch.device(device)
    before = torch.get_num_threads()
    try:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(threads)
        t = TINY if tiny else {}
        config = t.get("config")
        print("generation suite: cached vs recompute ...", file=sys.stderr, flush=True)
        result = {"generation": generation_rows(device, t.get("lengths", LENGTHS), config,
                                                points=t.get("points", 8), repeat=1 if tiny else 3)}
        print("generation suite: linear + cross-entropy ...", file=sys.stderr, flush=True)
        result["lce"] = [row for shape in t.get("lce", LCE_SHAPES) for row in lce_rows(device, shape)]
        print("generation suite: training steps ...", file=sys.stderr, flush=True)
        result["train"] = train_rows(device, t.get("train", TRAIN), config, steps=2 if tiny else 4,
                                     warmup=1 if tiny else 2, with_compile=with_compile)
    finally:
        torch.set_num_threads(before)
    return result


if __name__ == "__main__":  # the peak-memory child: lce provider N D V device threads repeat
    import json

    _, provider, n, d, v, dev, threads, repeat = sys.argv[1:9]
    print(json.dumps(_lce_child(provider, int(n), int(d), int(v), torch.device(dev), int(threads), int(repeat))))

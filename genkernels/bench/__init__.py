"""`genkernels bench`: time every fused op for each provider and print tables with speedups.

Per op: reference eager, torch.compile of the reference, and each fast backend present, measured
in one run (median of repeated timings, warm-up and compilation excluded), plus achieved GB/s and,
on a GPU, the fraction of the measured copy bandwidth. Results can be written as JSON with the
device, versions, shapes and dtypes. The same setups back the pytest-benchmark cases in bench/.
Two model suites run when named: `wavenet` (incremental vs naive generation, real-time factor at
16 kHz) and `pixelcnn` (windowed vs naive sampling of 32x32 images), in float32; so does
`flow_memory` (training memory and step time of a 32-block flow with and without recompute-by-inverse).
"""
from __future__ import annotations

import argparse
import json
import os

import torch

SUITES = ("diffusion", "attention", "overhead", "conv", "masked_conv", "wavenet", "pixelcnn", "flow_memory", "flow",
          "sampler", "unet", "norm", "transformer_ops", "generation", "lstm", "style", "molecules")
DEFAULT_SUITES = ("diffusion", "attention", "overhead", "conv", "masked_conv")  # the model suites run when named
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_diffusion(device, dtype, numel, batch, ops, with_compile=True):
    from genkernels.bench import diffusion
    from genkernels.bench.timing import measure

    rows = []
    providers = [p for p in diffusion.providers(device) if with_compile or p != "compile"]
    for op in ops:
        eager_time = None
        for provider in providers:
            fn, nbytes = diffusion.provider_function(op, provider, numel, batch, dtype, device)
            seconds = measure(fn, device)
            if provider == "eager":
                eager_time = seconds
            rows.append({"op": op, "provider": provider, "numel": numel, "batch": batch,
                         "dtype": str(dtype).replace("torch.", ""), "ms": seconds * 1e3,
                         "GB/s": nbytes / seconds / 1e9, "speedup_vs_eager": eager_time / seconds})
    return rows


def format_table(rows, columns) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    from genkernels.bench import diffusion, overhead
    from genkernels.bench.timing import copy_bandwidth, environment

    parser = argparse.ArgumentParser(prog="genkernels bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--numel", type=int, default=1 << 22, help="elements per op call (default 2^22)")
    parser.add_argument("--batch", type=int, default=16, help="samples the elements are split into")
    parser.add_argument("--suite", nargs="+", choices=SUITES, default=list(DEFAULT_SUITES),
                        help="which tables to run (default: the op tables; wavenet and pixelcnn, the "
                             "sampler speeds, run when named)")
    parser.add_argument("--ops", nargs="+", choices=diffusion.OPS, default=list(diffusion.OPS),
                        help="diffusion ops to time (default: all)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    parser.add_argument("--no-overhead", action="store_true", help="skip the per-call overhead table")
    parser.add_argument("--style-size", type=int, default=256, help="style suite: image side (default 256)")
    parser.add_argument("--style-steps", type=int, default=10,
                        help="style suite: Gatys steps timed, reported per 100 (default 10)")
    parser.add_argument("--moses-molecules", type=int, default=30_000,
                        help="molecules suite: MOSES test molecules whose metrics are timed (0: skip; default 30000)")
    parser.add_argument("--sampling-batch", type=int, default=256,
                        help="molecules suite: SMILES sampled per generate call (default 256)")
    parser.add_argument("--json", help="also write results (with device and versions) to this JSON file")
    args = parser.parse_args(argv)
    if args.numel < args.batch or args.numel % args.batch:
        parser.error(f"--numel must be a positive multiple of --batch ({args.batch}), got {args.numel}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch sees no CUDA device")

    env = environment(device)
    print("genkernels bench on " + ", ".join(f"{k}={v}" for k, v in env.items()))
    result = {"environment": env}
    if "diffusion" in args.suite:
        rows = run_diffusion(device, DTYPES[args.dtype], args.numel, args.batch, args.ops, not args.no_compile)
        columns = ["op", "provider", "dtype", "numel", "ms", "GB/s", "speedup_vs_eager"]
        if device.type == "cuda":
            bandwidth = copy_bandwidth(device)
            env["copy_GB/s"] = bandwidth / 1e9
            for r in rows:
                r["fraction_of_copy_bw"] = r["GB/s"] * 1e9 / bandwidth
            columns.append("fraction_of_copy_bw")
        print("\ndiffusion ops:\n" + format_table(rows, columns))
        result["diffusion"] = rows
    if "attention" in args.suite:
        from genkernels.bench import attention

        print("\nattention:")
        result["attention"] = attention.run_suite(device)
    if "conv" in args.suite:
        from genkernels.bench import conv

        result["conv"] = conv.run_suite(device, DTYPES[args.dtype], not args.no_compile)
        print("\nconv-family ops:\n" + format_table(
            result["conv"], ["op", "provider", "dtype", "shape", "ms", "GB/s", "speedup_vs_eager"]))
    if "masked_conv" in args.suite:
        from genkernels.bench import masked_conv

        result["masked_conv"] = masked_conv.run_suite(device, DTYPES[args.dtype])
        print(f"\nmasked conv ({masked_conv.NOTE}):\n" + format_table(
            result["masked_conv"], ["op", "mode", "provider", "backend", "dtype", "batch", "ms", "speedup_vs_conv2d"]))
    if "wavenet" in args.suite:
        from genkernels.bench import wavenet

        result["wavenet"] = wavenet.run_suite(device)
        print("\nWaveNet generation (incremental vs naive, float32):\n" + format_table(
            result["wavenet"], ["model", "batch", "receptive_field", "incremental_samples_per_s",
                                "naive_samples_per_s", "speedup", "real_time_factor_16khz"]))
    if "pixelcnn" in args.suite:
        from genkernels.bench import pixelcnn

        result["pixelcnn"] = pixelcnn.run_suite(device)
        print("\nPixelCNN sampling (windowed vs naive, float32):\n" + format_table(
            result["pixelcnn"], ["model", "image_shape", "batch", "receptive_rows", "windowed_images_per_s",
                                 "naive_images_per_s", "speedup"]))
    if "flow" in args.suite:
        from genkernels.bench import flow

        threads = (1, 2) if device.type == "cpu" else (None,)
        result["flow"] = flow.run_suite(device, DTYPES[args.dtype], not args.no_compile, threads=threads)
        print("\nflow ops (affine coupling, ActNorm):\n" + format_table(
            result["flow"], ["op", "provider", "threads", "dtype", "shape", "ms", "GB/s", "speedup_vs_eager"]))
    if "norm" in args.suite:
        from genkernels.bench import norm

        threads = (1, 2) if device.type == "cpu" else (None,)
        result["norm"] = norm.run_suite(device, DTYPES[args.dtype], not args.no_compile, threads=threads)
        print("\nnorm ops (GroupNorm + SiLU (+ scale-shift), adaLN):\n" + format_table(result["norm"], norm.COLUMNS))
    if "transformer_ops" in args.suite:
        from genkernels.bench import transformer_ops

        threads = (1, 2) if device.type == "cpu" else (None,)
        rows = transformer_ops.run_suite(device, DTYPES[args.dtype], not args.no_compile, threads=threads)
        result["transformer_ops"] = rows
        print("\ntransformer ops (RMSNorm, LayerNorm, SwiGLU, GELU-tanh, rotary):\n" + format_table(
            [r for r in rows if "peak_MiB" not in r], transformer_ops.COLUMNS))
        print("\nlinear + cross-entropy, chunked vs materialised fp32 logits:\n" + format_table(
            [r for r in rows if "peak_MiB" in r], transformer_ops.LCE_COLUMNS))
    if "generation" in args.suite:
        from genkernels.bench import generation

        result["generation"] = rows = generation.run_suite(device, not args.no_compile,
                                                           threads=1 if device.type == "cpu" else None)
        print("\nGPT generation, KV cache vs re-running the context (greedy, batch 1, float32):\n"
              + format_table(rows["generation"], generation.GEN_COLUMNS))
        print("\nlinear + cross-entropy vs F.cross_entropy on materialised fp32 logits:\n"
              + format_table(rows["lce"], generation.LCE_COLUMNS))
        print("\nGPT training steps, eager vs torch.compile of the loss:\n"
              + format_table(rows["train"], generation.TRAIN_COLUMNS))
    if "lstm" in args.suite:
        from genkernels.bench import lstm

        result["lstm"] = rows = lstm.run_suite(device)
        print("\nLSTM training steps (forward + backward, float32):\n" + format_table(rows["train"], lstm.TRAIN_COLUMNS))
        print("\nLSTM generation, one step at batch 1 (no grad, float32):\n"
              + format_table(rows["generation"], lstm.GEN_COLUMNS))
    if "style" in args.suite:
        from genkernels.bench import style

        result["style"] = rows = style.run_suite(device, not args.no_compile, args.style_size, args.style_steps)
        print("\nGram-matrix style loss, forward + backward:\n" + format_table(rows["gram"], style.GRAM_COLUMNS))
        print("\nstyle transfer per image (Gatys optimisation and the fast network, float32):\n"
              + format_table(rows["stylize"], style.STYLIZE_COLUMNS))
    if "molecules" in args.suite:
        from genkernels.bench import molecules

        result["molecules"] = rows = molecules.run_suite(device, args.sampling_batch, args.moses_molecules)
        print("\nSMILES sampling throughput (random weights of the default sizes, float32):\n"
              + format_table(rows["sampling"], molecules.SAMPLING_COLUMNS))
        if "metrics" in rows:
            print("\nMOSES metrics of MOSES test molecules (precomputed test statistics):\n"
                  + format_table(rows["metrics"], molecules.METRIC_COLUMNS))
    if "flow_memory" in args.suite:
        from genkernels.bench import flow_memory

        result["flow_memory"] = flow_memory.run_suite(device)
        print("\nflow training memory, stored vs recompute-by-inverse (float32):\n" + format_table(
            result["flow_memory"], [c for c in flow_memory.COLUMNS if any(c in r for r in result["flow_memory"])]))
    if "sampler" in args.suite:
        from genkernels.bench import sampler

        result["sampler"] = sampler.run_suite(device, threads=(1, 2) if device.type == "cpu" else (None,))
        print("\nsampling with guidance, fused steps vs unfused torch loop (float32):\n"
              + format_table(result["sampler"], sampler.COLUMNS))
    if "unet" in args.suite:
        from genkernels.bench import unet

        result["unet"] = rows = unet.run_suite(device, not args.no_compile)
        print("\nUNet training steps (digits model, float32):\n" + format_table(rows["train"], unet.TRAIN_COLUMNS))
        print("\nUNet sampling step (denoiser + DDIM step, float32):\n" + format_table(rows["step"], unet.STEP_COLUMNS))
        print("\nwhole sampling runs with guidance (digits model, float32):\n"
              + format_table(rows["sampler"], unet.SAMPLER_COLUMNS))
    if "overhead" in args.suite and not args.no_overhead:
        over = overhead.overhead_rows()
        print("\nper-call host overhead (16-element CPU tensor, CPU time of the calling thread):\n"
              + format_table(over, ["case", "us_per_call"]))
        result["overhead"] = over
    if args.json:
        env["load_average_1min_at_end"] = os.getloadavg()[0]  # other jobs sharing the cores
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0

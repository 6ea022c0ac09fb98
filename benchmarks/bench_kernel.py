"""Benchmark the fused SPLADE head (lsr.kernels.splade_max) against eager PyTorch and torch.compile.

Prints time and peak memory, forward (inference) and forward+backward, with ratios vs eager.
Benchmarks print numbers; they never assert on timings.

* CUDA available: bf16, V in {30,522, 250,002}, D in {384, 768}, BxS in {32x256, 128x256};
  ours = the Triton kernels; peak memory = torch.cuda.max_memory_allocated minus the inputs.
* CPU only: the chunked path at the MiniLM head shape (B=32, S=256, D=384, V=30,522, fp32)
  with a realistic mask (~60 % real tokens); each (variant, mode) runs in a fresh child
  process for peak memory, whose glibc is forced to mmap blocks >= 128 KiB (so freed memory
  leaves the RSS): the RSS high-water mark (VmHWM, reset through /proc/self/clear_refs) minus the RSS before the call;
  times come from one child per mode that warms every variant up, then times them round-robin
  (median of --repeats), so load from other processes hits all variants alike.

    python benchmarks/bench_kernel.py                # auto: CUDA grid if a GPU, else CPU
    python benchmarks/bench_kernel.py --cpu --repeats 3 --full-mask
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from harness import ChildFailed, child_report, markdown_table, peak_rss_mib, reset_peak_rss, rss_mib, run_child, time_alternating


# --------------------------------------------------------------------------- the variants


def eager_splade(hidden, weight, bias, mask):
    """Materialised logits: (hidden @ W.T + b).relu().log1p(), masked, max over positions."""
    logits = hidden @ weight.T + bias
    act = logits.relu().log1p() * mask.unsqueeze(-1).to(logits.dtype)
    return act.max(dim=1).values.float()


def ours_splade(hidden, weight, bias, mask):
    from lsr.kernels import splade_max

    return splade_max(hidden, weight, bias, mask)


_compiled = None


def compiled_splade(hidden, weight, bias, mask):
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(eager_splade, dynamic=False)
    return _compiled(hidden, weight, bias, mask)


VARIANTS = {"ours": ours_splade, "eager": eager_splade, "compile": compiled_splade}


def make_inputs(B, S, D, V, dtype, device, real_frac, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, D, generator=g).to(device, dtype)
    weight = (torch.randn(V, D, generator=g) / D**0.5).to(device, dtype)
    bias = (torch.randn(V, generator=g) * 0.1).to(device, dtype)
    if real_frac >= 1.0:
        mask = torch.ones(B, S, dtype=torch.long)
    else:
        # lengths uniform in [2*f-1, 1] * S (mean f), left-aligned like tokenizer padding
        lo = max(1, int((2 * real_frac - 1) * S))
        lengths = torch.randint(lo, S + 1, (B,), generator=g)
        mask = (torch.arange(S)[None, :] < lengths[:, None]).long()
    return hidden, weight, bias, mask.to(device)


def run_once(fn, inputs, mode):
    hidden, weight, bias, mask = inputs
    if mode == "fwd":
        with torch.inference_mode():
            return fn(hidden, weight, bias, mask)
    leaves = [t.detach().requires_grad_(True) for t in (hidden, weight, bias)]
    out = fn(leaves[0], leaves[1], leaves[2], mask)
    out.sum().backward()
    return None


# --------------------------------------------------------------------------- CPU (child per variant)


def cpu_child(variant, mode, repeats, real_frac, measure):
    B, S, D, V = 32, 256, 384, 30522
    inputs = make_inputs(B, S, D, V, torch.float32, "cpu", real_frac)
    if measure == "mem":
        fn = VARIANTS[variant]
        # Fresh process, glibc forced to mmap blocks >= 128 KiB (set by the parent) so that
        # freed memory leaves the RSS; torch.compile is warmed up (compiled) first.
        if variant == "compile":
            run_once(fn, inputs, mode)
        reset_peak_rss()
        base = rss_mib()
        run_once(fn, inputs, mode)
        child_report(peak_mib=peak_rss_mib() - base)
        return
    # Timing: every variant in this one process, warmed up, then timed round-robin so that
    # load from other processes on a shared machine hits all variants alike.
    warm, failed = {}, {}
    for v in variant.split(","):
        t0 = time.perf_counter()
        try:
            run_once(VARIANTS[v], inputs, mode)  # warm-up (and compilation for torch.compile)
        except Exception as e:  # e.g. torch.compile without a working C++ toolchain
            failed[v] = f"n/a ({type(e).__name__}: {str(e)[:60]})"
        warm[v] = time.perf_counter() - t0
    ok = {v: (lambda v=v: run_once(VARIANTS[v], inputs, mode)) for v in variant.split(",") if v not in failed}
    median, _ = time_alternating(ok, repeats, warmup=False, keep=statistics.median)
    child_report(**{v: {"time": median[v], "warmup": warm[v]} for v in ok}, **failed)


def _child(args, variant, mode, real_frac, measure):
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"} if measure == "mem" else {}
    cmd = [__file__, "--child", variant, "--mode", mode, "--measure", measure,
           "--repeats", str(args.repeats), "--real-frac", str(real_frac)]
    try:
        return run_child(cmd, env=env, timeout=args.child_timeout)[0]
    except ChildFailed as error:
        return f"n/a ({str(error)[:70]})"


def cpu_main(args):
    real_frac = 1.0 if args.full_mask else args.real_frac
    print(
        f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}), chunked path vs eager "
        f"vs torch.compile; B=32 S=256 D=384 V=30522 fp32, real tokens ~{real_frac:.0%}, "
        f"median of {args.repeats}"
    )
    results = {}
    variants = ["ours", "eager"] + ([] if args.no_compile else ["compile"])
    for mode in args.modes.split(","):
        timed = _child(args, ",".join(variants), mode, real_frac, "time")
        for variant in ("ours", "eager", "compile"):
            if variant not in variants:
                results[(variant, mode)] = "n/a (--no-compile)"
                continue
            if isinstance(timed, str):
                results[(variant, mode)] = timed
                continue
            t = timed[variant]
            if isinstance(t, str):
                results[(variant, mode)] = t
                continue
            mem = _child(args, variant, mode, real_frac, "mem")
            t["peak_mib"] = mem["peak_mib"] if isinstance(mem, dict) else float("nan")
            results[(variant, mode)] = t
            print(f"  {mode:<8} {variant:<8} {t['time'] * 1e3:.0f} ms, {t['peak_mib']:.0f} MiB, "
                  f"first call {t['warmup'] * 1e3:.0f} ms", flush=True)
    _print_table(results, ("fwd", "fwd+bwd"), unit="MiB (RSS)")


def _print_table(results, modes, unit):
    rows = []
    for mode in modes:
        eager = results.get(("eager", mode))
        for variant in ("ours", "eager", "compile"):
            r = results.get((variant, mode))
            if r is None:
                continue
            if isinstance(r, str):
                rows.append([mode, variant, r, "", "", ""])
                continue
            sp = mem = "n/a"
            if isinstance(eager, dict):
                sp = f"{eager['time'] / r['time']:.2f}x"
                mem = f"{r['peak_mib'] / max(eager['peak_mib'], 1e-9):.3f}"
            rows.append([mode, variant, f"{r['time'] * 1e3:.1f}", f"{r['peak_mib']:.1f}", sp, mem])
    print(markdown_table(["mode", "variant", "time (ms)", f"peak {unit}", "speed-up vs eager", "mem vs eager"], rows))


# --------------------------------------------------------------------------- CUDA


def cuda_measure(fn, inputs, mode, repeats):
    run_once(fn, inputs, mode)  # warm-up / autotune / compile
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_once(fn, inputs, mode)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"time": statistics.median(times), "peak_mib": peak}


def cuda_main(args):
    print(f"CUDA: {torch.cuda.get_device_name()}, bf16, Triton kernels vs eager vs torch.compile, "
          f"real tokens ~{args.real_frac:.0%}, median of {args.repeats}")
    for V in (30522, 250002):
        for D in (384, 768):
            for B, S in ((32, 256), (128, 256)):
                inputs = make_inputs(B, S, D, V, torch.bfloat16, "cuda", args.real_frac)
                results = {}
                for mode in ("fwd", "fwd+bwd"):
                    for variant in ("ours", "eager", "compile"):
                        if variant == "compile" and args.no_compile:
                            continue
                        try:
                            results[(variant, mode)] = cuda_measure(VARIANTS[variant], inputs, mode, args.repeats)
                        except torch.OutOfMemoryError:
                            results[(variant, mode)] = "OOM"
                        except Exception as e:  # compile failures etc.
                            results[(variant, mode)] = f"n/a ({type(e).__name__}: {str(e)[:50]})"
                        torch.cuda.empty_cache()
                print(f"\nV={V} D={D} B={B} S={S}")
                _print_table(results, ("fwd", "fwd+bwd"), unit="MiB (CUDA)")
                global _compiled
                _compiled = None
                del inputs
                torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="force the CPU benchmark")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-frac", type=float, default=0.6, help="mean fraction of real (unmasked) tokens")
    ap.add_argument("--full-mask", action="store_true", help="no padding at all")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--modes", default="fwd,fwd+bwd", help="comma list of fwd, fwd+bwd (CPU)")
    ap.add_argument("--child-timeout", type=int, default=600)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["fwd", "fwd+bwd"], help=argparse.SUPPRESS)
    ap.add_argument("--measure", choices=["time", "mem"], default="time", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        cpu_child(args.child, args.mode, args.repeats, args.real_frac, args.measure)
    elif torch.cuda.is_available() and not args.cpu:
        cuda_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    main()

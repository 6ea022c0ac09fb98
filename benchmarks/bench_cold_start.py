"""Cold vs warm start of the CLI: `lsr index` then `lsr search`, each a fresh process.

Cold: the Numba cache is empty (`NUMBA_CACHE_DIR` points at a new temporary folder; with it
set, Numba reads and writes only there, never the package's `__pycache__`), so every kernel
a command uses is compiled. Warm: the same commands again with that cache filled. The wall
time is the whole command as a user sees it (interpreter start, imports, encoding, build or
search). BM25 encodes, so no model is loaded and the figures are the index's own.
`lsr search` is timed twice cold: with a cache of its own (what a search compiles) and right
after the first `lsr index` (the user's first search: the build warmed the one-query code).
CPU seconds are the command's with its child processes (a Seismic `lsr index` compiles half of
its kernels in one, `lsr.indexer.precompile`) and, apart, its own process's: on a quiet 2-core
host the own process is the critical path, on a loaded one its CPU seconds say what the wall
time cannot.

    python benchmarks/bench_cold_start.py                       # SciFact, exact and seismic
    python benchmarks/bench_cold_start.py --kinds seismic --corpus PATH [--model FOLDER]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import markdown_table

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
# `lsr ARGS` as the console script runs it, printing its own process's CPU seconds at exit
LSR = ("import atexit, os, sys\n"
       "atexit.register(lambda: print(f'OWN_CPU {sum(os.times()[:2]):.3f}', file=sys.stderr))\n"
       "from lsr.cli.app import main\nsys.argv[0] = 'lsr'\nsys.exit(main())")  # fmt: skip


CPU: dict[str, float] = {}  # CPU seconds (user + system) of each timed command and its children, by label
OWN_CPU: dict[str, float] = {}  # CPU seconds of the command's own process, by label


def timed_lsr(args: list[str], env: dict[str, str], label: str = "") -> float:
    """Run `lsr ARGS` in a fresh process; its wall time in seconds (its CPU seconds into
    `CPU[label]`: on a shared host, the part of a cold start that load does not inflate). Exits
    on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LSR, *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[label] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    own = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("OWN_CPU ")]
    OWN_CPU[label] = float(own[-1]) if own else float("nan")
    if done.returncode:
        sys.exit(f"lsr {' '.join(args)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return took


def with_cache(cache: Path) -> dict[str, str]:
    """This environment with Numba's (and lsr's) cache at `cache`, offline."""
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache), "LSR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def cold_and_warm(kind: str, corpus: Path, query: str, work: Path, model: str = "bm25") -> dict[str, float]:
    """Index twice with one fresh cache (cold, then warm); search right after the first index
    (the user's first search: what the build compiled is cached), then twice more with a
    second fresh cache (a search's own compilation, cold, then warm)."""
    env = with_cache(work / f"cache-{kind}-index")
    search = ["search", query, "--json", "-i"]
    times = {}
    for run in ("cold", "warm"):
        index = work / f"index-{kind}-{run}"
        label = f"index {run}"
        times[label] = timed_lsr(["index", str(corpus), "-i", str(index), "-m", model, "--index-type", kind], env, label)
        if run == "cold":
            times["search after index"] = timed_lsr([*search, str(index)], env, "search after index")
    env = with_cache(work / f"cache-{kind}-search")
    for run in ("cold", "warm"):
        times[f"search {run}"] = timed_lsr([*search, str(work / f"index-{kind}-cold")], env, f"search {run}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=SCIFACT)
    parser.add_argument("--kinds", nargs="+", default=["exact", "seismic"], choices=["exact", "seismic"])
    parser.add_argument("--query", default="vitamin D deficiency and cancer risk")
    parser.add_argument("--model", default="bm25", help="the encoder (a model folder: encoding overlaps compilation)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lsr-cold-") as tmp:
        for kind in args.kinds:
            t = cold_and_warm(kind, args.corpus, args.query, Path(tmp), args.model)
            print(f"{kind}: " + ", ".join(f"{name} {s:.2f} s" for name, s in t.items()), file=sys.stderr, flush=True)
            for step, cold_label in (("index", "index cold"), ("search", "search cold"), ("search, after the first index", "search after index")):
                warm_label = f"{step.split(',')[0]} warm"
                cold, warm = t[cold_label], t[warm_label]
                rows.append([kind, f"lsr {step}", f"{cold:.2f}", f"{warm:.2f}", f"{cold - warm:+.2f}",
                             f"{CPU[cold_label]:.1f} / {CPU[warm_label]:.1f}",
                             f"{OWN_CPU[cold_label]:.1f} / {OWN_CPU[warm_label]:.1f}"])  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f}, model {args.model}")
    print(markdown_table(["index", "command", "cold (s)", "warm (s)", "cold − warm (s)", "CPU s cold / warm",
                          "own process CPU s cold / warm"], rows))  # fmt: skip


if __name__ == "__main__":
    main()

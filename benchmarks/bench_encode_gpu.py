"""Encoding throughput on a CUDA device: lsr's SpladeEncoder vs sentence-transformers'
SparseEncoder on the same model and documents (splade-tiny, SciFact), alternating, best of
--rounds; the vectors are compared too. Prints numbers; never asserts on timings.

    python benchmarks/bench_encode_gpu.py --n-docs 4096 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import markdown_table, time_alternating

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
SPLADE_TINY = ROOT.parent / "shared" / "models" / "splade-tiny"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SparseEncoder

    from lsr.encoders.splade import SpladeEncoder

    with open(CORPUS, encoding="utf-8") as f:
        docs = [(lambda d: d["title"] + " " + d["text"])(json.loads(line)) for line, _ in zip(f, range(args.n_docs))]
    ours = SpladeEncoder(SPLADE_TINY, device="cuda", max_batch_tokens=args.batch_size * args.max_length)
    theirs = SparseEncoder(str(SPLADE_TINY), device="cuda")
    theirs.max_seq_length = args.max_length

    def run_ours():
        return ours.encode_documents(docs, batch_size=args.batch_size, max_length=args.max_length)

    def run_theirs():
        return theirs.encode_document(docs, batch_size=args.batch_size, convert_to_sparse_tensor=True)

    peak = {}

    def on_gpu(name, fn):
        """`fn` run to completion on the device, its peak memory recorded."""

        def run():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out = fn()
            torch.cuda.synchronize()
            peak[name] = torch.cuda.max_memory_allocated() / 2**20
            return out

        return run

    # one warm-up each (cuBLAS, Triton autotune), then --rounds alternating rounds, best kept
    best, out = time_alternating({"lsr": on_gpu("lsr", run_ours), "sentence-transformers": on_gpu("sentence-transformers", run_theirs)},
                                 args.rounds)  # fmt: skip
    dense_ours = out["lsr"].to_dense()
    dense_theirs = out["sentence-transformers"].coalesce().to_dense().cpu().numpy()
    print(f"{torch.cuda.get_device_name()}, splade-tiny, {args.n_docs} SciFact docs, max length {args.max_length}, "
          f"batch {args.batch_size}, fp32, best of {args.rounds}")
    print(markdown_table(["", "docs/s", "peak GPU memory MiB"], [[n, f"{args.n_docs / best[n]:.1f}", f"{peak[n]:.1f}"] for n in best]))
    print(f"ratio (ours / ST): {best['sentence-transformers'] / best['lsr']:.2f}x docs/s, "
          f"{peak['lsr'] / peak['sentence-transformers']:.2f}x memory; max |diff| {np.abs(dense_ours - dense_theirs).max():.2e}")


if __name__ == "__main__":
    main()

"""CPU document encoding: lsr's SpladeEncoder vs sentence-transformers' SparseEncoder.

Same SPLADE-shaped model (the all-MiniLM-L6-v2 backbone with a random MLM transform and a
shifted decoder bias, ~150 active terms per document; built offline by
`lsr.encoders._testing.build_minilm_splade`), same documents (the first N SciFact documents,
title + " " + text), same max length and batch size. Each variant runs in a fresh subprocess,
so its peak RSS (VmHWM) is its own; the vectors are compared at the end.

    .venv/bin/python benchmarks/bench_encode.py                  # 512 docs, max length 256
    .venv/bin/python benchmarks/bench_encode.py --n-docs 64       # quicker

Prints throughput (docs/s, encode time only, model load excluded), peak RSS, and the largest
absolute difference between the two sets of vectors. Never asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def read_docs(n: int) -> list[str]:
    out = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            if len(out) >= n:
                break
            d = json.loads(line)
            out.append(d["title"] + " " + d["text"])
    return out


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(variant: str, folder: str, n_docs: int, max_length: int, batch_size: int, out: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    docs = read_docs(n_docs)
    import torch

    t0 = time.perf_counter()
    if variant == "lsr":
        from lsr.encoders import load_encoder

        enc = load_encoder(folder, device="cpu")
        load_s = time.perf_counter() - t0
        rss_loaded = rss_kib("VmRSS")
        t1, c1 = time.perf_counter(), cpu_s()
        vecs = enc.encode_documents(docs, batch_size=batch_size, max_length=max_length)
        enc_s, enc_cpu = time.perf_counter() - t1, cpu_s() - c1
        dense_rows = (vecs.indptr, vecs.indices, vecs.values)
    else:
        from sentence_transformers import SparseEncoder

        st = SparseEncoder(folder, device="cpu")
        st.max_seq_length = max_length
        load_s = time.perf_counter() - t0
        rss_loaded = rss_kib("VmRSS")
        t1, c1 = time.perf_counter(), cpu_s()
        emb = st.encode_document(docs, batch_size=batch_size, convert_to_tensor=True)
        enc_s, enc_cpu = time.perf_counter() - t1, cpu_s() - c1
        from lsr.sparse import SparseVectors

        v = SparseVectors.from_torch(emb.coalesce().to_dense())
        dense_rows = (v.indptr, v.indices, v.values)
    np.savez(out, indptr=dense_rows[0], indices=dense_rows[1], values=dense_rows[2])
    print(
        json.dumps(
            {
                "variant": variant,
                "load_s": load_s,
                "encode_s": enc_s,
                "docs_per_s": n_docs / enc_s,
                "cpu_s_per_doc": enc_cpu / n_docs,
                "rss_loaded_mib": rss_loaded / 1024,
                "peak_rss_mib": rss_kib("VmHWM") / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=512)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--folder", help="an existing SparseEncoder folder (default: build the MiniLM one)")
    ap.add_argument("--variants", default="lsr,sentence-transformers")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.n_docs, args.max_length, args.batch_size, args.out)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    folder = args.folder
    if folder is None:
        from lsr.encoders._testing import build_minilm_splade

        t = time.perf_counter()
        folder = str(build_minilm_splade(tmp / "minilm-splade", max_seq_length=args.max_length, texts=read_docs(16)))
        print(f"built the SPLADE-shaped MiniLM folder in {time.perf_counter() - t:.1f}s: {folder}")
    print(
        f"machine: {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"docs: first {args.n_docs} SciFact documents, max_length={args.max_length}, batch_size={args.batch_size}")
    results, vectors = {}, {}
    for variant in args.variants.split(","):
        out = tmp / f"{variant}.npz"
        cmd = [sys.executable, __file__, "--worker", variant, "--folder", folder, "--out", str(out),
               "--n-docs", str(args.n_docs), "--max-length", str(args.max_length), "--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{variant} failed")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        z = np.load(out)
        vectors[variant] = (z["indptr"], z["indices"], z["values"])
        r = results[variant]
        print(
            f"{variant:>22}: {r['docs_per_s']:7.2f} docs/s  {r['cpu_s_per_doc']:6.3f} CPU-s/doc  encode {r['encode_s']:7.1f}s  load {r['load_s']:5.1f}s  "
            f"RSS after load {r['rss_loaded_mib']:7.0f} MiB  peak RSS {r['peak_rss_mib']:7.0f} MiB  threads {r['threads']}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if {"lsr", "sentence-transformers"} <= set(results):
        from lsr.sparse import SparseVectors

        a = SparseVectors(*vectors["lsr"], dim=30522).to_dense()
        b = SparseVectors(*vectors["sentence-transformers"], dim=30522).to_dense()
        ours, st = results["lsr"], results["sentence-transformers"]
        print(
            f"speed-up {ours['docs_per_s'] / st['docs_per_s']:.2f}x (wall), "
            f"{st['cpu_s_per_doc'] / ours['cpu_s_per_doc']:.2f}x (CPU time), peak RSS ratio {ours['peak_rss_mib'] / st['peak_rss_mib']:.2f}; "
            f"vectors: max |diff| {np.abs(a - b).max():.2e}, same non-zeros: {bool(np.array_equal(a != 0, b != 0))}, "
            f"mean active terms {np.count_nonzero(a, axis=1).mean():.0f}"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

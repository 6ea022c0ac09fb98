"""CPU document encoding: lsr's SpladeEncoder vs sentence-transformers' SparseEncoder.

Same model, same documents (the first N SciFact documents, title + " " + text), same max
length and batch size, both in this one process: the variants alternate, round after round,
and each keeps its best round (the host is shared, so the best of several alternating rounds
is the least disturbed comparison). Peak RSS is per variant: the kernel's high-water mark is
reset (`/proc/self/clear_refs`) before each encode and read after it.

    .venv/bin/python benchmarks/bench_encode.py --model splade-tiny            # ../shared/models/splade-tiny
    .venv/bin/python benchmarks/bench_encode.py --model minilm                 # the MiniLM-SPLADE folder
    .venv/bin/python benchmarks/bench_encode.py --model splade-tiny --precision fp32,bf16,int8 --rounds 3
    .venv/bin/python benchmarks/bench_encode.py --model minilm --precision fp32,fp32-plain --n-docs 256

`--model minilm` builds the SPLADE-shaped MiniLM folder offline (the all-MiniLM-L6-v2
backbone with a random MLM transform; `tests/builders.py`'s `build_minilm_splade`); any other
value is a model folder. `--precision` applies to lsr only, one lsr variant per listed
precision (sentence-transformers runs fp32, the reference); `fp32-plain` is fp32 with the
screened head turned off (`LSR_SCREEN=0` while it encodes: the blocked fp32 head).
Prints docs/s for each variant,
peak RSS, process CPU time per document (less disturbed than wall time when other jobs
share the cores), each lsr variant's vectors against sentence-transformers' (largest difference, same
non-zeros, same top-10 terms), and for the SPLADE head (fp32 and bf16): its achieved GFLOP/s
on the encoder's own hidden states against a plain matmul of the same size and dtype (`[N, D]
@ [D, V]`, output preallocated) and the same matmul in L2-sized pieces (this CPU's practical
peak for that dtype); for fp32 also the screened head (`lsr.kernels.screened`, used where
the CPU has a native bf16 dot product) against the blocked fp32 head on the same batch, and
its candidate fraction (terms rescored in fp32) beside the fraction of non-zero terms.
sentence-transformers' ONNX backend is not a variant: it needs
`optimum-onnx`, whose 0.1.0 pins transformers < 4.58 (this project runs on 5.x).
Never asserts on timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import markdown_table, peak_rss_mib, reset_peak_rss, time_alternating

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
SPLADE_TINY = ROOT.parent / "shared" / "models" / "splade-tiny"


def read_docs(n: int) -> list[str]:
    out = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            if len(out) >= n:
                break
            d = json.loads(line)
            out.append(d["title"] + " " + d["text"])
    return out


@contextlib.contextmanager
def env(name: str, value: str | None):
    """The environment variable `name` set to `value` inside the block (None: left as it is)."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None and before is None:
            del os.environ[name]
        elif value is not None:
            os.environ[name] = before


def top_term_agreement(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float, float]:
    """How alike the rows' top terms are in `a` and `b`: the share of rows whose k largest
    entries are the same set of columns, the mean share of those k columns in common, and the
    share of rows with the same largest column."""
    ta = np.sort(np.argsort(-a, axis=1, kind="stable")[:, :k], axis=1)
    tb = np.sort(np.argsort(-b, axis=1, kind="stable")[:, :k], axis=1)
    common = np.array([len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(ta, tb)]) / k
    top1 = np.argmax(a, axis=1) == np.argmax(b, axis=1)
    return float(np.mean(np.all(ta == tb, axis=1))), float(common.mean()), float(top1.mean())


def head_gflops(enc, docs: list[str], max_length: int, batch_size: int, rounds: int) -> None:
    """The head alone on the encoder's hidden states of its first forward batch, vs plain mm
    (both in the head's dtype: fp32, or bf16 for `--precision bf16`)."""
    import torch

    from lsr.kernels import screened, splade_max

    tok = enc.tokenizer(docs[:batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    inputs = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
    if enc._wants_token_type:
        inputs["token_type_ids"] = torch.zeros_like(tok["input_ids"])
    with torch.inference_mode():
        dt = enc.weight.dtype
        hidden = enc._hidden(inputs).to(dt)
        mask = inputs["attention_mask"]
        n_tok, D, V = int(mask.sum()), hidden.shape[-1], enc.weight.shape[0]
        flop = 2.0 * n_tok * D * V
        h_tok = hidden[mask.bool()].contiguous()
        w = enc.weight
        out = torch.empty(n_tok, V, dtype=dt)
        piece = torch.empty(256, 512, dtype=dt)
        h256 = h_tok[:256]

        def head():
            splade_max(hidden, w, enc.bias, mask)

        def plain():
            torch.mm(h_tok, w.T, out=out)

        def blocked():
            splade_max(hidden, w, enc.bias, mask, screen=False)

        threads = torch.get_num_threads()

        def pieces():  # about the same flops as L2-sized [256, 512] products, one thread
            torch.set_num_threads(1)
            try:
                for r0 in range(0, n_tok, 256):
                    for v0 in range(0, V - 511, 512):
                        torch.mm(h256, w[v0 : v0 + 512].T, out=piece)
            finally:
                torch.set_num_threads(threads)

        fns = {"head": head, "plain": plain, "pieces": pieces}
        screening = dt == torch.float32 and screened.screen_applies(hidden, w, enc.bias)
        if screening:
            fns["blocked"] = blocked
            _, _, cand = screened.screen(hidden, w, enc.bias, mask != 0)
            nonzero = float((splade_max(hidden, w, enc.bias, mask) > 0).float().mean())
        best, _ = time_alternating(fns, rounds, warmup=False)
    pieces_flop = 2.0 * 256 * D * 512 * ((n_tok + 255) // 256) * (V // 512)
    g = {"head": flop / best["head"] / 1e9, "plain": flop / best["plain"] / 1e9, "pieces": pieces_flop / best["pieces"] / 1e9}
    print(
        f"{str(dt)[6:]} head on one batch ({n_tok} tokens, D={D}, V={V}, {flop / 1e9:.1f} GFLOP): ours {g['head']:.1f} GFLOP/s; "
        f"plain {str(dt)[6:]} mm [N,D]@[D,V] ({threads} threads) {g['plain']:.1f} GFLOP/s; one thread's mm in L2-sized [256,512] "
        f"pieces {g['pieces']:.1f} GFLOP/s (x{threads} threads = {g['pieces'] * threads:.1f}) -> head at "
        f"{g['head'] / g['plain']:.0%} of the plain mm, {g['head'] / (g['pieces'] * threads):.0%} of {threads} x the pieces' peak"
    )
    if screening:
        print(
            f"  screened head {best['head'] * 1e3:.0f} ms vs blocked fp32 head {best['blocked'] * 1e3:.0f} ms "
            f"({best['blocked'] / best['head']:.2f}x; blocked {flop / best['blocked'] / 1e9:.1f} GFLOP/s); candidates "
            f"{float(cand.float().mean()):.2%} of the (document, term) pairs, non-zero {nonzero:.2%}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="splade-tiny", help="splade-tiny, minilm, or a model folder")
    ap.add_argument("--precision", default="fp32", help="lsr's precision(s), comma-separated: fp32, bf16, int8, fp32-plain (fp32, screening off); one lsr variant each")
    ap.add_argument("--n-docs", type=int, default=512)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each variant keeps its best")
    ap.add_argument("--variants", default="lsr,sentence-transformers")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    docs = read_docs(args.n_docs)
    if args.model == "minilm":
        import sys

        sys.path.insert(0, str(ROOT / "tests"))  # the test-model builders live with the tests
        from builders import build_minilm_splade

        folder = str(build_minilm_splade(tmp / "minilm-splade", max_seq_length=args.max_length, texts=read_docs(16)))
    elif args.model == "splade-tiny":
        folder = str(SPLADE_TINY)
    else:
        folder = args.model
    precisions = args.precision.split(",")
    variants = [f"lsr {p}" if v == "lsr" else v for v in args.variants.split(",") for p in (precisions if v == "lsr" else [None])]
    encoders = {}
    lsr_encoders = {}
    for variant in variants:
        t = time.perf_counter()
        if variant.startswith("lsr"):
            from lsr.encoders import load_encoder

            precision = variant.split()[1]
            plain = precision.endswith("-plain")
            enc = lsr_encoders[variant] = load_encoder(folder, device="cpu", precision=precision.removesuffix("-plain"))

            def run_lsr(d, enc=enc, plain=plain):
                with env("LSR_SCREEN", "0" if plain else None):
                    return enc.encode_documents(d, batch_size=args.batch_size, max_length=args.max_length)

            encoders[variant] = run_lsr
        else:
            from sentence_transformers import SparseEncoder

            st = SparseEncoder(folder, device="cpu")
            st.max_seq_length = args.max_length

            def run_st(d, st=st):
                from lsr.sparse import SparseVectors

                emb = st.encode_document(d, batch_size=args.batch_size, convert_to_tensor=True)
                return SparseVectors.from_torch(emb.coalesce().to_dense())

            encoders[variant] = run_st
        print(f"{variant}: loaded in {time.perf_counter() - t:.1f}s")
        encoders[variant](docs[:4])  # warm-up (first-call allocations, lazy imports)
    print(
        f"model {folder}; {args.n_docs} SciFact documents, max_length={args.max_length}, "
        f"batch_size={args.batch_size}; {args.rounds} alternating rounds, best kept; torch threads {torch.get_num_threads()}; "
        f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    peak = {v: 0.0 for v in variants}
    cpu = {v: float("inf") for v in variants}

    def measured(variant: str):
        """The variant's encode, its peak RSS (high-water mark reset before it) and its
        process CPU time (best round) recorded."""

        def run():
            reset_peak_rss()
            start = time.process_time()
            vectors = encoders[variant](docs)
            cpu[variant] = min(cpu[variant], time.process_time() - start)
            peak[variant] = max(peak[variant], peak_rss_mib())
            return vectors

        return run

    def after_round(r: int, best: dict[str, float]) -> None:
        print(f"  round {r + 1}: " + ", ".join(f"{v} {args.n_docs / best[v]:.2f} docs/s (best so far)" for v in variants))

    best, vectors = time_alternating({v: measured(v) for v in variants}, args.rounds, warmup=False, after_round=after_round)
    print(markdown_table(["variant", "docs/s", "CPU-ms/doc", "peak RSS MiB (process, models of both loaded)"],
                         [[v, f"{args.n_docs / best[v]:.2f}", f"{cpu[v] / args.n_docs * 1e3:.0f}", f"{peak[v]:.0f}"] for v in variants]))  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    st_name = "sentence-transformers"
    for variant, enc in lsr_encoders.items():
        if st_name in vectors:
            a, b = vectors[variant].to_dense(), vectors[st_name].to_dense()
            print(
                f"{variant} / {st_name}: {best[st_name] / best[variant]:.2f}x (CPU time {cpu[st_name] / cpu[variant]:.2f}x); vectors: max |diff| {np.abs(a - b).max():.2e}, "
                f"same non-zeros: {bool(np.array_equal(a != 0, b != 0))}, mean active terms {np.count_nonzero(a, axis=1).mean():.0f}, "
                "top-10 terms: same set in {:.0%} of documents, {:.1%} in common on average, same top term in {:.0%}".format(*top_term_agreement(a, b, 10))
            )
    from lsr.encoders.splade import SpladeEncoder

    for variant, enc in lsr_encoders.items():
        if isinstance(enc, SpladeEncoder) and enc.precision in ("fp32", "bf16") and not variant.endswith("-plain"):
            head_gflops(enc, docs, args.max_length, 16, args.rounds)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Large vocabularies on the CPU: the fused SPLADE head against eager PyTorch, and a
decoder-only model indexed through `lsr index` against a full-logits implementation.

Mode `head` (default): at V = 250,002 (XLM-R), D = 768, S = 256, fp32, forward + backward
through the head (`hidden` and `weight` both require grad), every trial in a fresh child
process whose peak RSS is its own. Eager is `log1p(relu(hidden @ W.T + b)) * mask` → `amax`
over positions. For each engine: the peak RSS at a few batches, the per-document slope, the
largest batch within `--budget-mib` (measured directly for eager, whose batches are small;
extrapolated from the measured slope for ours, whose fitting batches would take minutes of
compute each on a 2-core machine: pass `--verify` to run that batch too), and the time per
document at an equal batch.

Mode `decoder`: a tiny random Qwen2 model (hidden 64, 2 layers) with Qwen's 151,936-entry
head, `--docs` SciFact documents (`../shared/data`), each engine in its own process. Like for
like: encode only, ours through the encoder and document pass `lsr index --model FOLDER` uses,
naive through the full `[B, S, V]` logits, both with the same echo inputs and batches and
both keeping the sparse vectors (after the same `--top-k`, if any). Then `lsr index`'s own
call (`Retriever.build`, exact index) with its time and peak RSS split at the end of encoding.

Head mode with `--device cuda` (`--dtype bf16` by default) runs the same comparison on a GPU
through the Triton kernel, in one process, peak CUDA memory measured at every batch tried.

    python benchmarks/bench_vocab.py [--mode head|decoder] [--budget-mib 4096] [--device cuda] [--top-k K]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import ChildFailed, child_report, markdown_table, run_child

ROOT = Path(__file__).resolve().parents[1]
V, D, S = 250_002, 768, 256


# ---- head mode ------------------------------------------------------------------------------


def head_trial(engine: str, batch: int) -> None:
    """One forward + backward through the head at `batch` (in a child process)."""
    import torch

    torch.manual_seed(0)
    hidden = (torch.randn(batch, S, D) * 0.05).requires_grad_()
    weight = (torch.randn(V, D) * 0.05).requires_grad_()
    bias = torch.zeros(V, requires_grad=True)
    mask = torch.ones(batch, S, dtype=torch.bool)
    mask[:, S - S // 8 :] = False  # some padding, as in a real batch
    start = time.perf_counter()
    if engine == "ours":
        from lsr.kernels import splade_max

        out = splade_max(hidden, weight, bias, mask)
    else:
        logits = hidden @ weight.T + bias
        out = (torch.log1p(torch.relu(logits)) * mask[..., None]).amax(dim=1)
    out.sum().backward()
    child_report(engine=engine, batch=batch, seconds=time.perf_counter() - start)


def _trial(engine: str, batch: int) -> dict | None:
    try:
        report, _ = run_child([__file__, "--child-head", engine, "--batch", str(batch)], timeout=900)
        return report
    except ChildFailed as err:  # killed for memory, or over time
        print(f"  {engine} batch {batch}: failed ({err})", file=sys.stderr)
        return None


def head_mode(budget: float, verify: bool) -> None:
    rows, fits, per_doc = [], {}, {}
    for engine, batches in (("eager", [1, 2, 3, 4]), ("ours", [1, 2, 4])):
        points = []
        for b in batches:
            r = _trial(engine, b)
            if r is None or r["peak_rss_mib"] > budget:
                break
            points.append(r)
            print(f"  {engine} batch {b}: {r['peak_rss_mib']:.0f} MiB, {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        (b0, m0), (b1, m1) = (points[0]["batch"], points[0]["peak_rss_mib"]), (points[-1]["batch"], points[-1]["peak_rss_mib"])
        slope = (m1 - m0) / max(b1 - b0, 1)
        if engine == "eager":
            fits[engine], how = b1, "measured"
        else:
            fits[engine], how = int(b0 + (budget - m0) // max(slope, 1e-9)), "extrapolated"
            if verify:
                r = _trial(engine, fits[engine])
                how = f"verified: {r['peak_rss_mib']:.0f} MiB" if r else "verify failed"
        per_doc[engine] = {p["batch"]: p["seconds"] / p["batch"] for p in points}
        rows.append([engine, ", ".join(f"{p['batch']}: {p['peak_rss_mib']:.0f}" for p in points), f"{slope:.1f}",
                     f"{fits[engine]} ({how})"])  # fmt: skip
    print(f"\nV={V:,} D={D} S={S} fp32 CPU, forward+backward, budget {budget:.0f} MiB (peak RSS of a fresh process)\n")
    print(markdown_table(["engine", "peak RSS MiB at batch", "MiB per document", "largest batch in budget"], rows))
    common = max(set(per_doc["eager"]) & set(per_doc["ours"]))
    print(f"\nbatch ratio: {fits['ours'] / max(fits['eager'], 1):.0f}x; time per document at batch {common}: "
          f"eager {per_doc['eager'][common]:.2f} s, ours {per_doc['ours'][common]:.2f} s")


def gpu_trial(engine: str, batch: int, dtype) -> tuple[float, float] | None:
    """Peak CUDA memory (MiB, inputs and gradients included) and seconds (median of 3 after
    a warm-up) of one forward + backward through the head at `batch`; None when out of memory."""
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        hidden = torch.randn(batch, S, D, device="cuda", dtype=dtype, generator=gen).mul_(0.05).requires_grad_()
        weight = torch.randn(V, D, device="cuda", dtype=dtype, generator=gen).mul_(0.05).requires_grad_()
        bias = torch.zeros(V, device="cuda", dtype=dtype, requires_grad=True)
        mask = torch.ones(batch, S, dtype=torch.bool, device="cuda")
        mask[:, S - S // 8 :] = False

        def step() -> None:
            if engine == "ours":
                from lsr.kernels import splade_max

                out = splade_max(hidden, weight, bias, mask)
            else:
                logits = hidden @ weight.T + bias
                out = (torch.log1p(torch.relu(logits)) * mask[..., None]).amax(dim=1)
            out.float().sum().backward()
            hidden.grad = weight.grad = bias.grad = None

        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return torch.cuda.max_memory_allocated() / 2**20, sorted(times[1:])[1]
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        hidden = weight = bias = mask = None
        torch.cuda.empty_cache()


def gpu_head_mode(budget: float, dtype_name: str) -> None:
    """The head comparison on a CUDA GPU (ours: the Triton kernel), measured directly: batches
    double until the budget is passed, then a bisection finds each engine's largest batch."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    fits, rows = {}, []
    for engine in ("eager", "ours"):
        seen, lo, hi = {}, 0, 1
        while True:  # double until over budget
            r = gpu_trial(engine, hi, dtype)
            if r is None or r[0] > budget:
                break
            seen[hi], lo, hi = r, hi, hi * 2
        while hi - lo > 1:  # bisect: lo fits, hi does not
            mid = (lo + hi) // 2
            r = gpu_trial(engine, mid, dtype)
            if r is not None and r[0] <= budget:
                seen[mid], lo = r, mid
            else:
                hi = mid
        fits[engine] = (lo, seen)
        print(f"  {engine}: largest batch {lo}", file=sys.stderr, flush=True)
    e_batch, o_batch = fits["eager"][0], fits["ours"][0]
    for engine, (batch, seen) in fits.items():
        mib, sec = seen[batch]
        rows.append([engine, str(batch), f"{mib:.0f}", f"{sec * 1e3 / batch:.3f}"])
    print(f"\nV={V:,} D={D} S={S} {dtype_name} {torch.cuda.get_device_name()}, forward+backward, budget {budget:.0f} MiB "
          f"(peak CUDA memory, inputs and gradients included)\n")
    print(markdown_table(["engine", "largest batch in budget", "peak MiB at that batch", "ms per document at that batch"], rows))
    common = gpu_trial("ours", e_batch, dtype) if e_batch else None
    eager = fits["eager"][1].get(e_batch)
    line = f"\nbatch ratio: {o_batch / max(e_batch, 1):.0f}x"
    if common and eager:
        line += (f"; at eager's batch {e_batch}: eager {eager[1] * 1e3 / e_batch:.3f} ms/doc {eager[0]:.0f} MiB, "
                 f"ours {common[1] * 1e3 / e_batch:.3f} ms/doc {common[0]:.0f} MiB")
    print(line)


# ---- decoder mode ---------------------------------------------------------------------------


def build_qwen(folder: Path, vocab: int = 151_936) -> None:
    """A random Qwen2 model (hidden 64, 2 layers, tied head) over Qwen's vocabulary size, with
    a byte-level BPE tokenizer trained on the corpus (the Hub's tokenizer is not offline)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    texts = [json.loads(line)["text"] for line in open(ROOT.parent / "shared/data/scifact/corpus.jsonl", encoding="utf-8")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts[:2000], trainers.BpeTrainer(vocab_size=8000, special_tokens=["<|endoftext|>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(folder)


def _texts(corpus: str) -> list[str]:
    return [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]


def ours_child(folder: str, corpus: str, max_length: int, batch: int) -> None:
    """Encode only, through the encoder `lsr index --model FOLDER` loads and its document pass
    (one `add` per batch of `batch` texts, vectors kept, top-k from `lsr_decoder.json`)."""
    from lsr.encoders.registry import load_encoder

    texts, encoder = _texts(corpus), load_encoder(folder, device="cpu")
    start = time.perf_counter()
    run = encoder.document_pass(batch_size=batch, max_length=max_length)
    for i in range(0, len(texts), batch):
        run.add(texts[i : i + batch])
    vectors = run.finish()
    child_report(seconds=time.perf_counter() - start, nnz=vectors.nnz)


def naive_child(folder: str, corpus: str, max_length: int, batch: int, top_k: int) -> None:
    """The same echo inputs and batches through the model's full `[B, S, V]` logits, each
    batch's vectors kept as sparse rows after the same top-k."""
    import torch

    from lsr.encoders.decoder import EchoTokenizer, load_causal_lm
    from lsr.encoders.postprocess import PostProcessing
    from lsr.sparse import SparseVectors

    texts, (tokenizer, model) = _texts(corpus), load_causal_lm(folder)
    echo, prune = EchoTokenizer(tokenizer), PostProcessing(max_active_dims=top_k or None)
    start, parts = time.perf_counter(), []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            inputs, pool = echo.tensors(texts[i : i + batch], max_length, "cpu")
            logits = model(**inputs).logits
            weights = (torch.log1p(torch.relu(logits)) * pool[..., None]).amax(dim=1)
            parts.append(prune(SparseVectors.from_dense(weights)))
    vectors = SparseVectors.concatenate(parts, dim=logits.shape[-1])
    child_report(seconds=time.perf_counter() - start, nnz=vectors.nnz)


def index_child(folder: str, corpus: str, index: str, batch: int) -> None:
    """`Retriever.build`, the call `lsr index CORPUS --model FOLDER --index-type exact` makes,
    with the peak RSS and time split where the last batch is encoded (its progress callback
    at 100%): encoding (model, documents, vectors) against the index build and save."""
    from harness import peak_rss_mib

    from lsr import Retriever

    marks: dict[str, float] = {}

    def progress(task: str, done: int, total: int, **counts: int) -> None:
        if done == total and "seconds" not in marks:
            marks.update(seconds=time.perf_counter() - start, peak=peak_rss_mib())

    start = time.perf_counter()
    built = Retriever.build(corpus, model=folder, path=index, batch_size=batch, index="exact", progress=progress)
    child_report(seconds=time.perf_counter() - start, encode_seconds=marks["seconds"], encode_peak_rss_mib=marks["peak"],
                 nnz=built.manifest["nnz"])  # fmt: skip


def decoder_mode(n_docs: int, max_length: int, batch: int, top_k: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "qwen"
        build_qwen(folder)
        if top_k:  # `lsr index --model FOLDER` has no top-k option: the folder's settings carry it
            (folder / "lsr_decoder.json").write_text(json.dumps({"postprocessing": {"max_active_dims": top_k}}))
        corpus = tmp / "corpus.jsonl"
        with open(ROOT.parent / "shared/data/scifact/corpus.jsonl", encoding="utf-8") as src, open(corpus, "w") as dst:
            for _, line in zip(range(n_docs), src):
                dst.write(line)
        common = [str(folder), str(corpus), "--max-length", str(max_length), "--batch", str(batch), "--top-k", str(top_k)]
        ours, _ = run_child([__file__, "--child-ours", *common], timeout=3600)
        naive, _ = run_child([__file__, "--child-naive", *common], timeout=3600)
        built, _ = run_child([__file__, "--child-index", str(folder), str(corpus), str(tmp / "ix"), "--batch", str(batch)], timeout=3600)
    index_build = built["seconds"] - built["encode_seconds"]
    rows = [["ours: encoder + document pass (as `lsr index`), encode only", f"{n_docs / ours['seconds']:.1f}",
             f"{ours['peak_rss_mib']:.0f}", f"{ours['nnz']:,}"],
            ["naive: full `[B, S, V]` logits, encode only", f"{n_docs / naive['seconds']:.1f}", f"{naive['peak_rss_mib']:.0f}",
             f"{naive['nnz']:,}"],
            ["`lsr index` (Retriever.build, exact): encoding phase", f"{n_docs / built['encode_seconds']:.1f}",
             f"{built['encode_peak_rss_mib']:.0f}", f"{built['nnz']:,}"],
            ["`lsr index`: whole run (+ exact index build and save, {:.1f} s)".format(index_build),
             f"{n_docs / built['seconds']:.1f}", f"{built['peak_rss_mib']:.0f}", ""]]  # fmt: skip
    print(f"\ntiny Qwen2 (hidden 64, 2 layers), V=151,936, {n_docs} SciFact documents, echo max_length {max_length}, "
          f"batch {batch}, top-k {top_k or 'none'}; each row a fresh process, peak RSS includes the model\n")
    print(markdown_table(["engine", "docs/s", "peak RSS MiB", "non-zeros kept"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("head", "decoder"), default="head")
    p.add_argument("--budget-mib", type=float, default=4096)
    p.add_argument("--verify", action="store_true", help="head: also run our extrapolated largest batch")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="head: cuda measures the Triton path directly")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="head on cuda: the inputs' dtype")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--max-length", type=int, default=256, help="decoder: the naive side's (lsr index's default: 256)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--top-k", type=int, default=0, help="decoder: terms kept per document, both sides (0: all)")
    p.add_argument("--child-head", choices=("ours", "eager"))
    p.add_argument("--child-ours", nargs=2, metavar=("FOLDER", "CORPUS"))
    p.add_argument("--child-naive", nargs=2, metavar=("FOLDER", "CORPUS"))
    p.add_argument("--child-index", nargs=3, metavar=("FOLDER", "CORPUS", "INDEX"))
    args = p.parse_args()
    if args.child_head:
        head_trial(args.child_head, args.batch)
    elif args.child_ours:
        ours_child(*args.child_ours, args.max_length, args.batch)
    elif args.child_naive:
        naive_child(*args.child_naive, args.max_length, args.batch, args.top_k)
    elif args.child_index:
        index_child(*args.child_index, args.batch)
    elif args.mode == "head" and args.device == "cuda":
        gpu_head_mode(args.budget_mib, args.dtype)
    elif args.mode == "head":
        head_mode(args.budget_mib, args.verify)
    else:
        decoder_mode(args.docs, args.max_length, args.batch, args.top_k)


if __name__ == "__main__":
    main()

"""One SPLADE training step: lsr.train vs sentence-transformers' SparseEncoderTrainer.

Same model (`../shared/models/splade-tiny`), same batch (SciFact train queries, each with its
first judged document and one other SciFact document as hard negative), same maximum
sequence length, InfoNCE over hard + in-batch negatives with FLOPS regularisation on both
sides, AdamW. Theirs: `SparseEncoderTrainer` with `SpladeLoss(SparseMultipleNegativesRankingLoss)`.
Ours: `lsr.train.Trainer`'s loss (the fused head, no [batch, seq, vocab] logits) + AdamW.

Each variant runs in a fresh subprocess (its peak RSS, VmHWM, is its own), alternating
ours / theirs for `--rounds` rounds; the step time is the median of the measured steps
after `--warmup` steps (wall and process CPU time: on a shared host the CPU seconds are the
steadier figure), the best round reported.

    .venv/bin/python benchmarks/bench_train.py                      # batch 16, length 128, CPU
    .venv/bin/python benchmarks/bench_train.py --batch-size 8 --steps 4 --rounds 1

Never asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import ChildFailed, child_report, markdown_table, peak_rss_mib, run_child

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
MODEL = ROOT.parent / "shared" / "models" / "splade-tiny"
LAMBDA_Q, LAMBDA_D, LR = 5e-3, 5e-3, 5e-5


def triples(n: int) -> list[tuple[str, str, str]]:
    from lsr.eval.loaders import load_beir
    from lsr.train.data import load_corpus_texts

    queries, qrels = load_beir(SCIFACT, "train")
    texts = load_corpus_texts(SCIFACT / "corpus.jsonl")
    ids = list(texts)
    out = []
    for i, (qid, judged) in enumerate(qrels.items()):
        if len(out) == n:
            break
        pos = sorted(judged)[0]
        neg = ids[(i * 7919) % len(ids)]
        out.append((queries[qid], texts[pos], texts[neg]))
    return out


def ours(data, args) -> list[float]:
    import torch

    from lsr.train import Trainer
    from lsr.train.data import Batch
    from lsr.train.regularizers import Regularizer

    trainer = Trainer({
        "model": {"base": str(MODEL), "query_max_length": args.max_length, "doc_max_length": args.max_length},
        "data": {"dataset": str(SCIFACT)},
        "trainer": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": LR},
        "output": {"dir": tempfile.mkdtemp()},
    })  # fmt: skip
    model = trainer.build_model()
    model.train()
    optimizer = torch.optim.AdamW(model.param_groups(LR, 0.01))
    reg = Regularizer("flops", LAMBDA_Q, LAMBDA_D)
    times = []
    for step in range(args.steps):
        rows = data[(step * args.batch_size) % len(data):][: args.batch_size]
        batch = Batch([str(i) for i in range(len(rows))], [q for q, _, _ in rows], [["p", "n"]] * len(rows), [[p, n] for _, p, n in rows])
        start, cpu = time.perf_counter(), time.process_time()
        loss, penalty, _, _ = trainer._loss(model, batch, 10**6, reg)
        (loss + penalty).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times


def theirs(data, args) -> list[float]:
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from transformers import TrainerCallback

    model = SparseEncoder(str(MODEL), device="cpu")
    model.max_seq_length = args.max_length
    rows = [data[(i % len(data))] for i in range(args.steps * args.batch_size)]
    ds = Dataset.from_dict({"anchor": [q for q, _, _ in rows], "positive": [p for _, p, _ in rows], "negative": [n for _, _, n in rows]})
    loss = SpladeLoss(model, SparseMultipleNegativesRankingLoss(model), document_regularizer_weight=LAMBDA_D, query_regularizer_weight=LAMBDA_Q)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            times.append((time.perf_counter() - self.start, time.process_time() - self.cpu))

    out = tempfile.mkdtemp()
    targs = SparseEncoderTrainingArguments(
        output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=LR,
        save_strategy="no", logging_strategy="no", report_to=[], dataloader_drop_last=True, use_cpu=True,
        seed=0, max_grad_norm=1.0, weight_decay=0.01, disable_tqdm=True,
    )  # fmt: skip
    trainer = SparseEncoderTrainer(model=model, args=targs, train_dataset=ds, loss=loss, callbacks=[Clock()])
    trainer.train()
    return times


def worker(variant: str, args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    torch.manual_seed(0)
    data = triples(max(args.batch_size * args.steps, args.batch_size))
    base_rss = peak_rss_mib()
    times = (ours if variant == "ours" else theirs)(data, args)
    measured = np.asarray(times[args.warmup:] or times)
    child_report(variant=variant, step_s=float(np.median(measured[:, 0])), cpu_s=float(np.median(measured[:, 1])),
                 rss_before_mib=base_rss, steps=len(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", choices=["ours", "theirs"])
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args)
        return
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for variant in ("ours", "theirs"):
            cmd = [__file__, "--worker", variant, "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            try:
                got, _ = run_child(cmd, env={"TOKENIZERS_PARALLELISM": "false"})
            except ChildFailed as error:
                sys.exit(f"{variant} failed: {error}")
            print(f"round {r + 1} {variant:6s}: {got['step_s']:.3f} s/step ({got['cpu_s']:.3f} CPU s), peak RSS {got['peak_rss_mib']:.0f} MiB", flush=True)
            if variant not in best or got["step_s"] < best[variant]["step_s"]:
                best[variant] = {**got, "peak_rss_mib": min(got["peak_rss_mib"], best.get(variant, got)["peak_rss_mib"])}
    o, t = best["ours"], best["theirs"]
    print(f"\nsplade-tiny, batch {args.batch_size} x (query, positive, negative), max length {args.max_length}, CPU "
          f"({os.cpu_count()} cores), best of {args.rounds}")
    print(markdown_table(["", "lsr.train", "ST SparseEncoderTrainer", "ratio"], [
        ["steps/s", f"{1 / o['step_s']:.3f}", f"{1 / t['step_s']:.3f}", f"{t['step_s'] / o['step_s']:.2f}x"],
        ["CPU seconds per step", f"{o['cpu_s']:.3f}", f"{t['cpu_s']:.3f}", f"{o['cpu_s'] / t['cpu_s']:.2f}x"],
        ["peak RSS (MiB)", f"{o['peak_rss_mib']:.0f}", f"{t['peak_rss_mib']:.0f}", f"{o['peak_rss_mib'] / t['peak_rss_mib']:.2f}x"],
    ]))  # fmt: skip

if __name__ == "__main__":
    main()

"""The training loop: AdamW with linear warm-up and decay, gradient accumulation, bf16
autocast on CUDA, checkpoints with exact resume, periodic evaluation with lsr's evaluator.

Progress goes to a callback (`callback(event: dict)`, `event["event"]` is `"start"`,
`"step"`, `"eval"` or `"done"`); the library never prints. Every logged step and evaluation
is also appended to `OUTPUT/train_log.jsonl`.

Output folder:

    OUTPUT/                      the trained model (config.json, model.safetensors, tokenizer
                                 files; idf.json for inference-free; for asymmetric, a
                                 sentence-transformers Router: modules.json, router_config.json,
                                 query_*/ and document_*/), loadable by `lsr.load_encoder` and
                                 sentence-transformers' `SparseEncoder`
    OUTPUT/lsr_train.json        the resolved configuration
    OUTPUT/train_log.jsonl       one JSON line per logged step / evaluation
    OUTPUT/checkpoints/step-N/   state.pt: model, optimiser, scheduler, RNG states, step (the
                                 data position is the step: batches are a function of it)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lsr.errors import LsrError
from lsr.train.config import load_config

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Trainer:
    """Train the model described by a configuration (path, dict, or `load_config`'s output)."""

    def __init__(self, config: str | Path | dict[str, Any], callback: Callable[[dict[str, Any]], None] | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.cfg = load_config(config, overrides)
        self.source = "config" if isinstance(config, dict) else str(config)  # names the file in errors
        self.callback = callback or (lambda event: None)
        self.output = Path(self.cfg["output"]["dir"])

    # ---- set-up ---------------------------------------------------------------------------

    def _device(self):
        import torch

        want = self.cfg["trainer"]["device"]
        if want:
            return torch.device(want)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _negatives_cache(self, corpus: Path, model: str) -> Path:
        if self.cfg["data"]["cache_dir"]:
            return Path(self.cfg["data"]["cache_dir"])
        from lsr.cache import cache_root

        st = corpus.stat()
        key = hashlib.sha256(f"{corpus.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{model}".encode()).hexdigest()[:16]
        return cache_root() / "train-negatives" / f"{_safe(corpus.parent.name or corpus.name)}-{key}"

    def build_data(self):
        """The `TrainingData` of the `[data]` section (and the corpus texts)."""
        from lsr.train import data as D

        dc = self.cfg["data"]
        dataset = Path(dc["dataset"])
        corpus = Path(dc["corpus"]) if dc["corpus"] else D.corpus_path(dataset)
        texts = D.load_corpus_texts(corpus)
        if dc["teacher_scores"]:
            from lsr.eval.loaders import load_queries

            examples = D.teacher_examples(D.read_teacher_scores(dc["teacher_scores"]), load_queries(dataset / "queries.jsonl"))
        elif dc["triples"]:
            queries = None
            if (dataset / "queries.jsonl").is_file():
                from lsr.eval.loaders import load_queries

                queries = load_queries(dataset / "queries.jsonl")
            examples, texts = D.read_triples(dc["triples"], queries, texts)
        else:
            negatives = None
            if dc["negatives"] != "none":
                from lsr.eval.loaders import load_beir

                queries, qrels = load_beir(dataset, dc["split"])
                negatives = D.mine_negatives(corpus, queries, qrels, dc["negatives"], self._negatives_cache(corpus, dc["negatives"]),
                                             depth=dc["negatives_depth"], skip_top=dc["skip_top"])
            examples = D.beir_examples(dataset, dc["split"], negatives)
        data = D.TrainingData(examples, texts, self.cfg["trainer"]["batch_size"], dc["n_negatives"], dc["seed"])
        return data, texts

    def build_model(self, texts: dict[str, str] | None = None):
        from lsr.train.models import build_model

        mc = self.cfg["model"]
        idf_texts = list(texts.values()) if (mc["kind"] == "inference-free" and texts) else None
        extra = {"template": mc["template"], "lora": mc["lora"], "bidirectional": mc["bidirectional"]} if mc["kind"] == "decoder" else {}
        return build_model(mc["kind"], mc["base"], idf_texts=idf_texts, query_base=mc["query_base"] or None, pooling=mc["pooling"],
                           activation=mc["activation"], gradient_checkpointing=mc["gradient_checkpointing"], **extra)

    def check_model(self) -> None:
        """Configuration errors only the checkpoints reveal, before any data work: an
        asymmetric model's two sides must share one vocabulary."""
        mc = self.cfg["model"]
        if mc["kind"] == "asymmetric" and mc["query_base"]:
            from lsr.train.models import vocabulary_difference

            reason = vocabulary_difference(mc["base"], mc["query_base"])
            if reason:
                raise LsrError(f"{self.source}: [model] query_base: {reason}")

    # ---- the step ---------------------------------------------------------------------------

    def _loss(self, model, batch, step: int, regularizer):
        import torch

        from lsr.train import losses

        mc, lc = self.cfg["model"], self.cfg["loss"]
        B, C = len(batch.queries), len(batch.docs[0])
        q = model.encode_queries(batch.queries, mc["query_max_length"]).float()
        d = model.encode_documents([t for docs in batch.docs for t in docs], mc["doc_max_length"]).float()
        kind = lc["kind"]
        if kind == "infonce":
            loss = losses.info_nce(q, d.view(B, C, -1), lc["temperature"], lc["in_batch"])
        else:
            student = losses.scores(q, d.view(B, C, -1))
            teacher = torch.from_numpy(batch.teacher).to(student.device)
            if kind == "disco":
                from lsr.train.distill import disco_loss

                loss = disco_loss(student, teacher, temperature=lc["temperature"])
            else:
                if teacher.shape[0] > 1 or lc["normalize_teachers"]:
                    from lsr.train.distill import ensemble_normalize

                    teacher = ensemble_normalize(teacher, scale=lc["teacher_scale"])
                else:
                    teacher = teacher[0]
                loss = losses.margin_mse(student, teacher) if kind == "margin-mse" else losses.kl_distill(student, teacher, lc["temperature"])
        reg = regularizer(q, d, step)
        return loss, reg, q.detach(), d.detach()

    # ---- checkpoints -------------------------------------------------------------------------

    def _checkpoints(self) -> list[Path]:
        root = self.output / CHECKPOINTS
        found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit() and (p / "state.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def _save_checkpoint(self, step: int, model, optimizer, scheduler) -> Path:
        import torch

        root = self.output / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{step}"
        tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.tmp-", dir=root))
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self._checkpoints()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _load_checkpoint(self, path: Path, model, optimizer, scheduler) -> int:
        import torch

        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        return int(state["step"])

    # ---- evaluation ---------------------------------------------------------------------------

    def evaluate(self, model) -> dict[str, float]:
        """nDCG@10 (lsr's evaluator, trec_eval -c) and mean active terms per document and per
        query on `[trainer] eval_dataset` (default: the training dataset), split `eval_split`."""
        from lsr.encoders import load_encoder
        from lsr.eval.runner import Dataset, index_cache_dir, run_model

        tc = self.cfg["trainer"]
        dataset = Dataset.open(tc["eval_dataset"] or self.cfg["data"]["dataset"], split=tc["eval_split"] or "test")
        with tempfile.TemporaryDirectory(prefix=".eval-", dir=self.output) as tmp:
            folder = Path(tmp) / "model"
            model.save(folder)
            encoder = load_encoder(str(folder), device=str(model.device))
            result = run_model(dataset, encoder, k=100, metrics=["ndcg@10"], cache=Path(tmp) / "cache")
            manifest = json.loads((index_cache_dir(dataset, encoder.spec, Path(tmp) / "cache") / "manifest.json").read_text())
            q = encoder.encode_queries(list(dataset.queries.values()))
        return {
            "ndcg@10": result.metrics["ndcg@10"],
            "doc_terms": manifest["nnz"] / max(manifest["n_docs"], 1),
            "query_terms": q.nnz / max(len(q), 1),
        }

    # ---- the loop -------------------------------------------------------------------------------

    def train(self, resume: bool = False) -> Path:
        """Train to `[trainer] max_steps`; with `resume`, continue from the last checkpoint in
        the output folder. Returns the output folder (the saved model)."""
        import torch

        from lsr.train.regularizers import Regularizer, active_terms, flops_metric

        tc, rc = self.cfg["trainer"], self.cfg["regularizer"]
        self.check_model()
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "lsr_train.json").write_text(json.dumps(self.cfg, indent=2), encoding="utf-8")
        device = self._device()
        if device.type == "cpu":
            from lsr.encoders.splade import cpu_count

            torch.set_num_threads(tc["threads"] or cpu_count())
        random.seed(tc["seed"])
        np.random.seed(tc["seed"])
        torch.manual_seed(tc["seed"])
        data, texts = self.build_data()
        model = self.build_model(texts).to(device)
        model.train()
        idf = getattr(model, "idf", None)
        regularizer = Regularizer(rc["kind"], rc["lambda_q"], rc["lambda_d"], rc["warmup_steps"], idf)
        groups = model.param_groups(tc["lr"], tc["weight_decay"], self.cfg["model"]["query_lr"])
        optimizer = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))  # one kernel over all tensors
        total, warm = tc["max_steps"], tc["warmup_steps"]

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return max(0.0, (total - step) / max(1, total - warm))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        step = 0
        if resume:
            found = self._checkpoints()
            if not found:
                raise LsrError(f"{self.output}: no checkpoint to resume from")
            step = self._load_checkpoint(found[-1], model, optimizer, scheduler)
            logger.info("resumed from %s", found[-1])
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and tc["bf16"] else nullcontext())
        log = open(self.output / "train_log.jsonl", "a", encoding="utf-8")
        self.callback({"event": "start", "step": step, "max_steps": total, "examples": len(data), "device": str(device)})
        start, window = time.perf_counter(), []
        try:
            while step < total:
                loss_sum = reg_sum = 0.0
                stats = []
                for micro in range(tc["grad_accum"]):
                    batch = data.batch(step * tc["grad_accum"] + micro)
                    with autocast:
                        loss, reg, q, d = self._loss(model, batch, step, regularizer)
                    ((loss + reg) / tc["grad_accum"]).backward()
                    loss_sum += float(loss.detach()) / tc["grad_accum"]
                    reg_sum += float(reg.detach()) / tc["grad_accum"]
                    stats.append((active_terms(q), active_terms(d), flops_metric(q, d)))
                if tc["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                s = np.mean(stats, axis=0)
                window.append((loss_sum, reg_sum, *s))
                event = {"event": "step", "step": step, "max_steps": total, "loss": loss_sum, "reg": reg_sum,
                         "query_terms": float(s[0]), "doc_terms": float(s[1]), "flops": float(s[2]),
                         "lr": scheduler.get_last_lr()[0], "elapsed": time.perf_counter() - start}
                if step % tc["log_steps"] == 0 or step == total:
                    m = np.mean(window, axis=0)
                    log.write(json.dumps({"step": step, "loss": m[0], "reg": m[1], "query_terms": m[2], "doc_terms": m[3],
                                          "flops": m[4], "lr": event["lr"], "elapsed": event["elapsed"]}) + "\n")
                    log.flush()
                    window = []
                if tc["save_steps"] and step % tc["save_steps"] == 0 and step < total:
                    self._save_checkpoint(step, model, optimizer, scheduler)
                self.callback(event)
                if tc["eval_steps"] and (step % tc["eval_steps"] == 0 or step == total):
                    model.eval()
                    with torch.no_grad():
                        metrics = self.evaluate(model)
                    model.train()
                    log.write(json.dumps({"step": step, "eval": metrics}) + "\n")
                    log.flush()
                    self.callback({"event": "eval", "step": step, **metrics})
        finally:
            log.close()
        self._save_model(model)
        self.callback({"event": "done", "step": step, "output": str(self.output), "elapsed": time.perf_counter() - start})
        return self.output

    def _save_model(self, model) -> None:
        """Write the model files into a temporary folder, then move each into the output."""
        tmp = Path(tempfile.mkdtemp(prefix=".model.tmp-", dir=self.output))
        try:
            model.save(tmp)
            for f in tmp.iterdir():
                target = self.output / f.name
                if target.is_dir():  # an earlier run's route folder: os.replace cannot overwrite it
                    shutil.rmtree(target)
                os.replace(f, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def train(config: str | Path | dict[str, Any], callback: Callable[[dict[str, Any]], None] | None = None,
          resume: bool = False, **overrides: dict[str, Any]) -> Path:
    """Train from a configuration (a TOML path or a dict); returns the output folder.

    `overrides`: per-section keys replacing the configuration's, e.g.
    `train("run.toml", trainer={"max_steps": 10})`."""
    return Trainer(config, callback, overrides or None).train(resume=resume)

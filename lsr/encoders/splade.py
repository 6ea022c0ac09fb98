"""SPLADE (siamese) encoder over any Hugging Face masked-LM checkpoint.

`w[v] = max_s mask[s] · log(1 + relu(logit[s, v]))` (or `sum` pooling; `log1p_relu` adds a
second log1p, as sentence-transformers' SpladePooling). The MLM head is split in two:

* the transform (BERT's dense + act + LayerNorm, DistilBERT's vocab_transform + act +
  vocab_layer_norm, RoBERTa/XLM-R's dense + gelu + layer_norm, ModernBERT's head...) runs in
  torch as part of the model's own forward: we stop the forward at the input of the
  output-embedding layer (`model.get_output_embeddings()`), so no architecture list is needed;
* the final projection (decoder weight [V, D] + bias [V]) + activation + pooling goes through
  `lsr.kernels.splade_max`, so the [batch, seq, vocab] logits are never materialised.

Inputs are sorted by length and batched so that padding is minimal; the kernel skips the
masked positions that remain.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.encoders.base import Encoder, Progress
from lsr.encoders.postprocess import PostProcessing
from lsr.errors import LsrError
from lsr.sparse import SparseVectors

logger = logging.getLogger(__name__)

POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")


def check_head_options(pooling: str, activation: str) -> None:
    """One line for a pooling or activation the head does not know (SPLADE and decoder encoders)."""
    if pooling not in POOLINGS:
        raise LsrError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if activation not in ACTIVATIONS:
        raise LsrError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
PRECISIONS = ("fp32", "bf16", "int8")


class _Captured(Exception):
    """Raised by the pre-hook on the output embeddings to stop the forward there."""

    def __init__(self, hidden: Any) -> None:
        self.hidden = hidden


def mlm_hidden(model: Any, head: Any, inputs: dict[str, Any], name: str = "model") -> Any:
    """Run `model` on `inputs` up to the input of its output embeddings `head`: the MLM
    transform's output `[B, S, D]` (with autograd when enabled), the decoder never applied.

    A forward pre-hook on `head` raises to stop the forward there. An unpadded (flattened)
    model's `[N, D]` rows are scattered back to `[B, S, D]` (zeros at padding).
    """

    def stop(module, args):
        raise _Captured(args[0])

    handle = head.register_forward_pre_hook(stop)
    try:
        model(**inputs)
    except _Captured as got:
        hidden = got.hidden
    else:
        raise LsrError(f"{name}: the forward pass never reached the output embeddings")
    finally:
        handle.remove()
    if hidden.dim() == 2:
        mask = inputs["attention_mask"].bool()
        full = hidden.new_zeros(*mask.shape, hidden.shape[-1])
        full[mask] = hidden
        hidden = full
    return hidden


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SpladeEncoder(Encoder):
    """SPLADE over a masked LM (`AutoModelForMaskedLM`), from a Hugging Face id or folder.

    `max_length` is the query truncation length (documents take `encode_documents`'
    `max_length`, capped by the model's own limit). A forward pass takes at most `batch_size`
    texts and about `max_batch_tokens` padded tokens (texts sorted by length). `postprocessing` (top-k, minimum weight,
    integer quantisation) applies to every vector returned.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        pooling: str = "max",
        activation: str = "relu",
        max_length: int | None = None,
        postprocessing: PostProcessing | None = None,
        num_threads: int | None = None,
        max_batch_tokens: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise LsrError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        check_head_options(pooling, activation)
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.model_name = str(model)
        self.pooling, self.activation = pooling, activation
        self.postprocessing = postprocessing or PostProcessing()
        self.device = torch.device(device or default_device())
        # CPU: ~4k padded tokens per forward (16 × 256) pads less and holds less; GPU: no cap
        self.max_batch_tokens = int(max_batch_tokens or (4096 if self.device.type == "cpu" else 1 << 30))
        if self.device.type == "cpu":
            n = num_threads or cpu_count()
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.model = AutoModelForMaskedLM.from_pretrained(self.model_name, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise LsrError(f"cannot load a masked-LM model from {self.model_name}: {err}") from None
        self.model.eval().to(self.device)
        head = self.model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise LsrError(f"{self.model_name}: the model has no output embeddings (MLM decoder)")
        self._head = head
        self.weight = head.weight.detach()
        bias = getattr(head, "bias", None)
        self.bias = bias.detach() if bias is not None else None
        self.precision = "fp32"
        self.set_precision(precision)
        params = inspect.signature(self.model.forward).parameters
        self._wants_token_type = "token_type_ids" in params
        limit = getattr(self.tokenizer, "model_max_length", None) or 512
        limit = min(limit, getattr(self.model.config, "max_position_embeddings", limit) or limit)
        if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit = min(limit, self.model.config.max_position_embeddings - 2)
        self.model_max_length = int(limit)
        self.max_length = int(min(max_length or self.model_max_length, self.model_max_length))
        pad = self.tokenizer.pad_token_id
        self.pad_id = 0 if pad is None else int(pad)
        V = self.weight.shape[0]
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(V)))
        self.vocab = [t if t is not None else f"[unused_{i}]" for i, t in enumerate(tokens)]

    def set_precision(self, precision: str) -> None:
        """Run the model at `precision`, from fp32: `bf16` the backbone and the head's
        projection (bf16 logits tiles, fp32 bias and activation), `int8` the backbone's Linear
        layers (the head's projection stays fp32)."""
        import torch

        if precision == self.precision:
            return
        if precision not in PRECISIONS or self.precision != "fp32":
            raise LsrError(f"cannot change the precision from {self.precision} to {precision!r}")
        self.precision = precision
        if precision == "bf16":
            self.bias = self.bias.clone() if self.bias is not None else None  # stays fp32
            self.model.to(torch.bfloat16)
            self.weight = self._head.weight.detach()  # now bf16: the head's tiles run in bf16
        elif precision == "int8":
            if self.device.type != "cpu":
                raise LsrError("precision int8 (dynamic quantisation) runs on the CPU only")
            import warnings

            from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

            linears = {
                name: default_dynamic_qconfig
                for name, module in self.model.named_modules()
                if isinstance(module, torch.nn.Linear) and module is not self._head
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
                quantize_dynamic(self.model, linears, dtype=torch.qint8, inplace=True)

    # ---- spec ---------------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        model = self.model_name
        if Path(model).is_dir():
            model = str(Path(model).resolve())
        spec = {
            "type": "splade",
            "model": model,
            "pooling": self.pooling,
            "activation": self.activation,
            "max_length": self.max_length,
            "dim": self.dim,
        }
        if self.precision != "fp32":
            spec["precision"] = self.precision
        if self.postprocessing.active:
            spec["postprocessing"] = self.postprocessing.to_spec()
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None = None, device: str | None = None) -> "SpladeEncoder":
        """The model `spec["model"]` names (a folder or a hub id: `directory` is not needed)."""
        return cls(
            spec["model"],
            device=device,
            pooling=spec.get("pooling", "max"),
            activation=spec.get("activation", "relu"),
            max_length=spec.get("max_length"),
            postprocessing=PostProcessing.from_spec(spec.get("postprocessing")),
            precision=spec.get("precision", "fp32"),
        )

    # ---- encoding -----------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        return self.encode(texts, max_length=self.max_length, batch_size=32)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, progress: Progress | None = None
    ) -> SparseVectors:
        return self.encode(texts, max_length=max_length, batch_size=batch_size, progress=progress)

    def _hidden(self, inputs: dict[str, Any]):
        """The MLM transform's output: the input of the output embeddings, [B, S, D].

        `mlm_hidden`'s hook is registered per call; batches running on several threads at once
        are safe: whichever hook fires stops the forward that reached it, with that forward's
        own input."""
        return mlm_hidden(self.model, self._head, inputs, self.model_name)

    def _encode_batch(self, ids: list[list[int]], rows: np.ndarray, lengths: np.ndarray) -> SparseVectors:
        """One forward over the texts `rows` (padded to the longest) and the head."""
        import torch

        from lsr.kernels import splade_max

        width = int(lengths[rows].max())
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, r in enumerate(rows):
            input_ids[j, : lengths[r]] = ids[r]
            mask[j, : lengths[r]] = 1
        inputs = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if self._wants_token_type:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        hidden = self._hidden(inputs)  # [B, S, D], an unpadded model's rows scattered back
        weights = splade_max(
            hidden, self.weight, self.bias, inputs["attention_mask"], activation=self.activation, pooling=self.pooling
        )
        return SparseVectors.from_dense(weights.float().cpu())

    def encode(
        self, texts: Sequence[str], max_length: int = 256, batch_size: int = 32, progress: Progress | None = None
    ) -> SparseVectors:
        """Encode texts (sorted by length, batched, padding skipped) into sparse vectors;
        `progress(texts_done)` is called after each batch.

        On the CPU with several threads, whole batches run concurrently on that many Python
        threads, torch single-threaded meanwhile: no parallel region per op, whose barriers
        cost most of the time of a small model's many small ops (and stall whenever another
        process takes a core), and no Python thread left idle while the other finishes an op.
        The head's L2-sized tiles (`lsr.kernels.blocked`) stay in each core's own cache.
        """
        import torch

        texts = list(texts)
        n = len(texts)
        if n == 0:
            return SparseVectors(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), self.dim)
        max_length = int(min(max_length, self.model_max_length))
        ids = self.tokenizer(  # the fast tokenizer's batch call (parallel in Rust)
            texts, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the peak memory comes early
        # at most batch_size texts and about max_batch_tokens padded tokens per forward: on a
        # few CPU cores a smaller batch runs as fast per token, pads less and keeps the
        # attention activations small
        batches = []
        start = 0
        while start < n:
            width = int(lengths[order[start]])
            size = max(1, min(batch_size, self.max_batch_tokens // max(width, 1)))
            batches.append(order[start : start + size])
            start += size
        parts: list[SparseVectors | None] = [None] * len(batches)
        workers = min(torch.get_num_threads(), len(batches)) if self.device.type == "cpu" else 1
        done = _Done(progress)
        if workers <= 1:
            with torch.inference_mode():
                for i, rows in enumerate(batches):
                    parts[i] = self._encode_batch(ids, rows, lengths)
                    done.add(len(rows))
        else:
            _run_threads(workers, batches, lambda i: self._encode_batch(ids, batches[i], lengths), parts, done)
        vectors = SparseVectors.concatenate(parts, dim=self.dim)[np.argsort(order, kind="stable")]
        return self.postprocessing(vectors)


def _run_threads(workers: int, batches: list, fn, parts: list, done: "_Done") -> None:
    """parts[i] = fn(i) for every batch, on `workers` Python threads pulling batches in order,
    torch single-threaded meanwhile (restored after); the first error is re-raised here."""
    import itertools
    import threading

    import torch

    counter = itertools.count()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                for i in iter(lambda: next(counter), None):
                    if i >= len(batches) or errors:
                        return
                    parts[i] = fn(i)
                    done.add(len(batches[i]))
        except BaseException as err:  # re-raised on the calling thread
            errors.append(err)

    from lsr.kernels import torch_single_threaded

    with torch_single_threaded():
        pool = [threading.Thread(target=work, daemon=True) for _ in range(workers - 1)]
        for t in pool:
            t.start()
        work()
        for t in pool:
            t.join()
    if errors:
        raise errors[0]


class _Done:
    """Counts the texts encoded (from any thread) and reports the total to `progress`."""

    def __init__(self, progress: Progress | None) -> None:
        import threading

        self.progress, self.count, self.lock = progress, 0, threading.Lock()

    def add(self, k: int) -> None:
        if self.progress is not None:
            with self.lock:
                self.count += k
                self.progress(self.count)

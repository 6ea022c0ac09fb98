"""Trainable sparse encoders: siamese SPLADE and inference-free.

Both run the masked LM up to its output embeddings (`lsr.encoders.splade.mlm_hidden`) and
the decoder + activation + max pooling through `lsr.kernels.splade_max`, so the
`[batch, seq, vocab]` logits are never materialised, in training either.

`save(directory)` writes a Hugging Face masked-LM folder (config, safetensors, tokenizer)
that `lsr.load_encoder` and sentence-transformers' `SparseEncoder` both load; the
inference-free model adds `idf.json` (token → query weight) beside it.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lsr.errors import LsrError

KINDS = ("splade", "inference-free")


class SpladeModel(torch.nn.Module):
    """SPLADE over any `AutoModelForMaskedLM`; `encode(texts)` → dense `[B, V]` weights
    (differentiable)."""

    def __init__(self, base: str | Path, pooling: str = "max", activation: str = "relu", gradient_checkpointing: bool = False) -> None:
        super().__init__()
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(base))
            self.mlm = AutoModelForMaskedLM.from_pretrained(str(base), dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise LsrError(f"cannot load a masked-LM model from {base}: {err}") from None
        self.head = self.mlm.get_output_embeddings()
        if self.head is None or not hasattr(self.head, "weight"):
            raise LsrError(f"{base}: the model has no output embeddings (MLM decoder)")
        self.pooling, self.activation = pooling, activation
        self.wants_token_type = "token_type_ids" in inspect.signature(self.mlm.forward).parameters
        if gradient_checkpointing:  # transformers >= 5.x renamed it; older releases have only the first
            enable = getattr(self.mlm, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.mlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.name = str(base)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def vocab_size(self) -> int:
        return self.head.weight.shape[0]

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt", return_token_type_ids=False
        )
        if self.wants_token_type:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        return {k: v.to(self.device) for k, v in inputs.items()}

    def encode(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        from lsr.encoders.splade import mlm_hidden
        from lsr.kernels import splade_max

        inputs = self.tokenize(texts, max_length)
        hidden = mlm_hidden(self.mlm, self.head, inputs, self.name)
        return splade_max(hidden, self.head.weight, getattr(self.head, "bias", None), inputs["attention_mask"], self.activation, pooling=self.pooling)

    def encode_queries(self, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
        return self.encode(texts, max_length)

    def encode_documents(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        return self.encode(texts, max_length)

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for name, p in self.mlm.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        return [{"params": decay, "lr": lr, "weight_decay": weight_decay}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.mlm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def corpus_idf(tokenizer: Any, texts: Sequence[str], vocab_size: int, max_length: int = 512) -> np.ndarray:
    """BM25-style idf `log(1 + (N - df + 0.5) / (df + 0.5))` of each token id over `texts`
    (tokens without special tokens, truncated to `max_length`); unseen tokens get df = 0."""
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(texts), 1024):
        enc = tokenizer(list(texts[start : start + 1024]), add_special_tokens=False, truncation=True, max_length=max_length)
        for ids in enc["input_ids"]:
            u = np.unique(np.asarray(ids, dtype=np.int64))
            df[u[u < vocab_size]] += 1
    n = len(texts)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


class InferenceFreeModel(SpladeModel):
    """Documents through SPLADE (trained); a query is the sum over its distinct tokens of a
    trainable per-token weight (`query_weights`, initialised from `idf`, kept ≥ 0 by a ReLU):
    token presence × weight, as `lsr.encoders.inference_free.IdfQueryEncoder` computes it."""

    def __init__(self, base: str | Path, idf: np.ndarray, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        V = self.vocab_size
        table = np.zeros(V, dtype=np.float32)
        table[: min(V, len(idf))] = np.asarray(idf, dtype=np.float32)[:V]
        self.query_weights = torch.nn.Parameter(torch.from_numpy(table))
        self.register_buffer("idf", torch.from_numpy(table.copy()), persistent=False)

    def encode_queries(self, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
        V = self.vocab_size
        presence = torch.zeros(len(texts), V, device=self.device)
        for i, ids in enumerate(enc["input_ids"]):
            if ids:
                presence[i, torch.tensor([t for t in ids if t < V], dtype=torch.long, device=self.device)] = 1.0
        return presence * torch.relu(self.query_weights)

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        groups = super().param_groups(lr, weight_decay)
        groups.append({"params": [self.query_weights], "lr": query_lr if query_lr is not None else lr, "weight_decay": 0.0})
        return groups

    def save(self, directory: str | Path) -> None:
        from lsr.encoders.inference_free import IdfQueryEncoder

        super().save(directory)
        directory = Path(directory)
        tok = directory / "tokenizer.json"
        if not tok.is_file():
            raise LsrError(f"{self.name}: an inference-free model needs a fast tokenizer (tokenizer.json)")
        weights = torch.relu(self.query_weights.detach()).float().cpu().numpy()
        IdfQueryEncoder(tok, weights, dim=self.vocab_size).write_idf_json(directory / "idf.json")


def build_model(kind: str, base: str | Path, idf_texts: Sequence[str] | None = None, **kwargs: Any) -> SpladeModel:
    """`splade` or `inference-free` (query weights initialised from the idf of `idf_texts`)."""
    if kind == "splade":
        return SpladeModel(base, **kwargs)
    if kind == "inference-free":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base))
        size = len(tok)
        idf = corpus_idf(tok, list(idf_texts or []), size) if idf_texts else np.full(size, math.log(2.0), np.float32)
        return InferenceFreeModel(base, idf, **kwargs)
    raise LsrError(f"unknown model kind {kind!r}; expected one of {KINDS}")

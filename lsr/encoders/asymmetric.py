"""Asymmetric encoders: one encoder for queries, another for documents (a sentence-transformers
Router with two different models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lsr.encoders.base import Encoder
from lsr.errors import LsrError
from lsr.sparse import SparseVectors


class AsymmetricEncoder(Encoder):
    """Queries through `query`, documents through `document` (an encoder, or a spec loaded on
    first use). Both must share the vocabulary."""

    def __init__(self, query: Encoder, document: Encoder | dict[str, Any], device: str | None = None) -> None:
        self.query = query
        self._document = document if isinstance(document, Encoder) else None
        self._document_spec = document.spec if isinstance(document, Encoder) else dict(document)
        self.device = device
        if self._document is not None and self._document.dim != query.dim:
            raise LsrError(f"query ({query.dim}) and document ({self._document.dim}) encoders differ in dimension")

    @property
    def vocab(self) -> Sequence[str]:  # type: ignore[override]
        return self.query.vocab

    @property
    def dim(self) -> int:
        return self.query.dim

    @property
    def document(self) -> Encoder:
        if self._document is None:
            from lsr.encoders import _from_model_spec

            self._document = _from_model_spec(self._document_spec, self.device)
        return self._document

    @property
    def spec(self) -> dict[str, Any]:
        return {"type": "asymmetric", "query": self.query.spec, "document": self._document_spec}

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        return self.query.encode_queries(texts)

    def encode_documents(self, texts, batch_size=32, max_length=256, show_progress=False) -> SparseVectors:
        return self.document.encode_documents(
            texts, batch_size=batch_size, max_length=max_length, show_progress=show_progress
        )

    def save(self, directory: Path) -> dict[str, Any]:
        return {"type": "asymmetric", "query": self.query.save(directory), "document": self._document_spec}

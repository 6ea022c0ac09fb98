"""One encoder for queries, another for documents: inference-free (an `IdfQueryEncoder`
query side, no neural network at query time) or asymmetric (two SPLADE models, e.g. a
sentence-transformers Router)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lsr.encoders.base import Encoder, Progress
from lsr.errors import LsrError
from lsr.sparse import SparseVectors


class AsymmetricEncoder(Encoder):
    """Queries through `query` (any encoder); documents through `document`: an encoder, or its
    spec, built on first use (so encoding queries loads no document model: with an
    `IdfQueryEncoder` query side, torch is never imported). Both share the vocabulary.

    The spec's type is `inference-free` when the query side is an `IdfQueryEncoder`, else
    `asymmetric`; `directory` is where the document spec's files are, if any.
    """

    def __init__(
        self,
        query: Encoder,
        document: Encoder | dict[str, Any] | None,
        directory: Path | None = None,
        device: str | None = None,
    ) -> None:
        self.query, self.directory, self.device = query, directory, device
        self._document = document if isinstance(document, Encoder) else None
        self.document_spec = document.spec if isinstance(document, Encoder) else document
        if self._document is not None:
            self._check_dim(self._document)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None, device: str | None = None) -> "AsymmetricEncoder":
        from lsr.encoders.registry import from_spec

        return cls(from_spec(spec["query"], directory, device), spec.get("document"), directory, device)

    @property
    def vocab(self) -> Sequence[str]:  # type: ignore[override]
        return self.query.vocab

    @property
    def dim(self) -> int:
        return self.query.dim

    @property
    def document(self) -> Encoder:
        """The document encoder, built from its spec the first time it is needed."""
        if self._document is None:
            if not self.document_spec:
                raise LsrError("this encoder was loaded for queries only (no document model)")
            from lsr.encoders.registry import from_spec

            self._document = self._check_dim(from_spec(self.document_spec, self.directory, self.device))
        return self._document

    def _check_dim(self, document: Encoder) -> Encoder:
        if document.dim != self.dim:
            raise LsrError(f"the document model has {document.dim} dimensions but the query side {self.dim}")
        return document

    @property
    def spec(self) -> dict[str, Any]:
        from lsr.encoders.inference_free import IdfQueryEncoder

        if isinstance(self.query, IdfQueryEncoder):
            return {"type": "inference-free", "model": (self.document_spec or {}).get("model"),
                    "document": self.document_spec, "query": self.query.spec}  # fmt: skip
        return {"type": "asymmetric", "query": self.query.spec, "document": self.document_spec}

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        return self.query.encode_queries(texts)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, progress: Progress | None = None
    ) -> SparseVectors:
        return self.document.encode_documents(texts, batch_size=batch_size, max_length=max_length, progress=progress)

    def save(self, directory: Path) -> dict[str, Any]:
        return {**self.spec, "query": self.query.save(Path(directory))}

"""What every encoder provides, and the streaming document pass the Retriever drives."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from lsr.sparse import SparseVectors


class DocumentPass:
    """Encodes a corpus batch by batch; `finish()` returns all document vectors in order.

    The default keeps each batch's vectors; encoders that need corpus statistics (BM25)
    override it to collect counts first and weigh them at the end.
    """

    def __init__(self, encoder: "Encoder", batch_size: int, max_length: int) -> None:
        self.encoder, self.batch_size, self.max_length = encoder, batch_size, max_length
        self.parts: list[SparseVectors] = []

    def add(self, texts: Sequence[str]) -> None:
        self.parts.append(
            self.encoder.encode_documents(texts, batch_size=self.batch_size, max_length=self.max_length)
        )

    def finish(self) -> SparseVectors:
        return SparseVectors.concatenate(self.parts, dim=self.encoder.dim)

    def chunks(self) -> Iterator[SparseVectors]:
        """The document vectors in order, batch by batch, each released as it is handed out,
        for index builds that stream them instead of holding all of them twice."""
        parts, self.parts = self.parts[::-1], []
        while parts:
            yield parts.pop()


class Encoder:
    """Base of all encoders: text in, `SparseVectors` over `vocab` out.

    `spec` is JSON-serialisable and saved in every index; `save(directory)` writes whatever
    else is needed (vocabulary, weight tables) so that `encoder_from_spec` can rebuild the
    query side from the index directory alone.
    """

    spec: dict[str, Any]
    vocab: Sequence[str]

    @property
    def dim(self) -> int:
        return len(self.vocab)

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        raise NotImplementedError

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, show_progress: bool = False
    ) -> SparseVectors:
        raise NotImplementedError

    def document_pass(self, batch_size: int = 32, max_length: int = 256) -> DocumentPass:
        return DocumentPass(self, batch_size, max_length)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the files the query side needs into `directory`; return the spec to store."""
        return self.spec

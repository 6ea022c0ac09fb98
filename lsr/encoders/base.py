"""What every encoder provides, and the streaming document pass the Retriever drives."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lsr.sparse import SparseVectors

# Called as texts are encoded, with the number of texts done so far (the caller draws a bar).
Progress = Callable[[int], None]


class DocumentPass:
    """Encodes a corpus batch by batch; `finish()` returns all document vectors in order.

    `encoder` is the encoder whose queries match the vectors of this pass: the encoder itself,
    or for an encoder that needs corpus statistics (BM25) a fresh one the pass fits to the
    corpus, which collects counts first and weighs them at the end.
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

    def ready(self) -> list[SparseVectors]:
        """The vectors encoded since the last call, in order, released by the pass: the
        Retriever spills them to disk as they come. A pass that weighs its vectors only at
        the end (BM25) gives none here; `chunks()` then hands out the rest."""
        parts, self.parts = self.parts, []
        return parts

    def chunks(self) -> Iterator[SparseVectors]:
        """The document vectors in order, batch by batch, each released as it is handed out,
        for index builds that stream them instead of holding all of them twice."""
        parts, self.parts = self.parts[::-1], []
        while parts:
            yield parts.pop()


class Encoder:
    """Base of all encoders: text in, `SparseVectors` over `vocab` out.

    `spec` is JSON-serialisable and saved in every index; `save(directory)` writes whatever
    else is needed (vocabulary, weight tables) so that the class's `from_spec(spec,
    directory, device)` rebuilds the query side from the index directory alone. Every kind
    is listed by its spec `type` in `lsr.encoders.registry.ENCODERS`.
    """

    spec: dict[str, Any]
    vocab: Sequence[str]

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None, device: str | None = None) -> "Encoder":
        """The encoder `spec` describes; its files (if any) are in `directory`."""
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return len(self.vocab)

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        raise NotImplementedError

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, progress: Progress | None = None
    ) -> SparseVectors:
        raise NotImplementedError

    def document_pass(self, batch_size: int = 32, max_length: int = 256) -> DocumentPass:
        return DocumentPass(self, batch_size, max_length)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the files the query side needs into `directory`; return the spec to store."""
        return self.spec

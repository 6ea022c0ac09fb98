"""Corpus readers: kept as the public entry; they live in `lsr.formats.documents`."""

from lsr.formats.documents import CorpusReader, Document, join_title

__all__ = ["CorpusReader", "Document", "join_title"]

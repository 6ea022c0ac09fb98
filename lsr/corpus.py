"""Corpus readers: kept as the public entry; they live in `lsr.formats.documents`."""

from lsr.formats.documents import BadRecord, CorpusReader, Document, join_title

__all__ = ["BadRecord", "CorpusReader", "Document", "join_title"]

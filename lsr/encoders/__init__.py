"""Encoders: text → `lsr.SparseVectors`. `load_encoder` resolves a name; `encoder_from_spec`
rebuilds the query side from an index directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsr.encoders.base import Encoder

__all__ = ["Encoder", "load_encoder", "encoder_from_spec"]


def load_encoder(name_or_path: str, device: str | None = None) -> Encoder:
    """Load an encoder by name: `bm25` (lexical, no model)."""
    if name_or_path == "bm25":
        from lsr.encoders.bm25 import Bm25Encoder

        return Bm25Encoder()
    raise NotImplementedError(name_or_path)


def encoder_from_spec(spec: dict[str, Any], directory: Path) -> Encoder:
    """Rebuild the encoder saved with an index (its query side must work from `directory`)."""
    if spec["type"] == "bm25":
        from lsr.encoders.bm25 import Bm25Encoder

        return Bm25Encoder.from_directory(directory, spec)
    raise NotImplementedError(spec["type"])

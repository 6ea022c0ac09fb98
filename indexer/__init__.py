"""Sparse indexes (NumPy + Numba only): exact inverted lists and a Seismic-style approximate index."""

from lsr.indexer.exact import ExactIndex
from lsr.indexer.storage import IndexFormatError

__all__ = ["ExactIndex", "IndexFormatError"]

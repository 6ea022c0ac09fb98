"""Sparse indexes (NumPy + Numba only): exact inverted lists and a Seismic-style approximate index.

Every kind follows `Index` (`protocol.py`); `load(path)` opens an index directory of any
kind registered in `KINDS`. `SeismicIndex` and the interchange formats load lazily: `lsr
search` on an exact index never imports Numba. Numba's cache folder is chosen first
(`lsr.cache.use_numba_cache`: a user cache folder when this package's is read-only).
"""

from lsr.cache import use_numba_cache

use_numba_cache()  # before any kernel module is imported: Numba fixes the cache folder then

from lsr.indexer.exact import ExactIndex
from lsr.indexer.protocol import KINDS, Index, load, register_kind
from lsr.indexer.storage import IndexFormatError, UnsafeTargetError

__all__ = [
    "Index",
    "KINDS",
    "load",
    "register_kind",
    "ExactIndex",
    "IndexFormatError",
    "UnsafeTargetError",
    "SeismicIndex",
    "FormatError",
    "read_csr",
    "read_seismic_bin",
    "write_csr",
    "write_seismic_bin",
]


def __getattr__(name: str):
    if name == "SeismicIndex":
        from lsr.indexer.seismic import SeismicIndex

        return SeismicIndex
    if name in ("FormatError", "read_csr", "read_seismic_bin", "write_csr", "write_seismic_bin"):
        from lsr.indexer import formats

        return getattr(formats, name)
    raise AttributeError(f"module 'lsr.indexer' has no attribute {name!r}")

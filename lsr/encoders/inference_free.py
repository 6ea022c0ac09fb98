"""Inference-free sparse retrieval: SPLADE documents, tokenizer + weight-table queries.

The query vector has, for each distinct token id of the query (no special tokens added,
truncated to `max_length`), the weight `idf[token]` — token presence × weight, as
OpenSearch's neural-sparse doc-v* models and sentence-transformers' SparseStaticEmbedding do.

This module imports neither torch nor transformers: the query side uses the `tokenizers`
library on `tokenizer.json` and a NumPy weight table, so `lsr search` on such an index starts
without torch. An inference-free encoder is an `AsymmetricEncoder` with this query side: its
document side (a `SpladeEncoder`) is loaded only when documents are encoded.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.encoders.base import Encoder
from lsr.encoders.postprocess import PostProcessing
from lsr.errors import LsrError
from lsr.sparse import SparseVectors

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
IDF_FILE = "idf.json"


class IdfQueryEncoder(Encoder):
    """Queries → token presence × per-token weight. Needs only `tokenizers` and NumPy."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        weights: np.ndarray,
        max_length: int = 512,
        dim: int | None = None,
        postprocessing: PostProcessing | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.tokenizer_file = Path(tokenizer_file)
        try:
            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as err:  # tokenizers raises a bare Exception on malformed files
            raise LsrError(f"{self.tokenizer_file}: not a tokenizer.json ({err})") from None
        self.tokenizer.no_padding()
        self.max_length = int(max_length)
        self.tokenizer.enable_truncation(self.max_length)
        self.weights = np.asarray(weights, dtype=np.float32)
        self._dim = int(dim if dim is not None else len(self.weights))
        if len(self.weights) < self._dim:
            self.weights = np.concatenate([self.weights, np.zeros(self._dim - len(self.weights), np.float32)])
        self.postprocessing = postprocessing or PostProcessing()
        self._vocab: list[str] | None = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def vocab(self) -> list[str]:  # type: ignore[override]
        if self._vocab is None:
            vocab = [f"[unused_{i}]" for i in range(self._dim)]
            for token, i in self.tokenizer.get_vocab(with_added_tokens=True).items():
                if i < self._dim:
                    vocab[i] = token
            self._vocab = vocab
        return self._vocab

    @classmethod
    def from_idf_json(
        cls,
        tokenizer_file: str | Path,
        idf_file: str | Path,
        max_length: int = 512,
        dim: int | None = None,
        postprocessing: PostProcessing | None = None,
    ) -> "IdfQueryEncoder":
        """From OpenSearch's layout: `idf.json` maps token string → weight."""
        from tokenizers import Tokenizer

        try:
            table = json.loads(Path(idf_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LsrError(f"{idf_file}: cannot read the token weight table ({err})") from None
        if not isinstance(table, dict):
            raise LsrError(f"{idf_file}: expected a JSON object mapping tokens to weights")
        tok = Tokenizer.from_file(str(tokenizer_file))
        size = max(tok.get_vocab_size(with_added_tokens=True), dim or 0)
        weights = np.zeros(size, dtype=np.float32)
        unknown = 0
        for token, w in table.items():
            i = tok.token_to_id(token)
            if i is None:
                unknown += 1
                continue
            weights[i] = float(w)
        if unknown:
            logger.warning("%s: %d tokens are not in the tokenizer's vocabulary; ignored", idf_file, unknown)
        return cls(tokenizer_file, weights, max_length=max_length, dim=dim or size, postprocessing=postprocessing)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        rows = []
        for ids in self.token_ids(texts):
            cols = np.unique(np.asarray(ids, dtype=np.int64))
            cols = cols[cols < self._dim]
            w = self.weights[cols]
            nz = w != 0
            rows.append((cols[nz], w[nz]))
        return self.postprocessing(SparseVectors.from_rows(rows, self._dim, sum_duplicates=False))

    def encode_documents(self, texts, batch_size=32, max_length=256, progress=None) -> SparseVectors:
        vectors = self.encode_queries(texts)
        if progress:
            progress(len(vectors))
        return vectors

    def write_idf_json(self, path: Path) -> None:
        vocab = self.vocab
        table = {vocab[i]: float(self.weights[i]) for i in np.flatnonzero(self.weights[: self._dim])}
        Path(path).write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": "idf", "tokenizer": TOKENIZER_FILE, "idf": IDF_FILE, "max_length": self.max_length, "dim": self._dim}
        if self.postprocessing.active:
            spec["postprocessing"] = self.postprocessing.to_spec()
        return spec

    def save(self, directory: Path, prefix: str = "") -> dict[str, Any]:
        """Copy tokenizer.json and write idf.json into `directory` (names prefixed by `prefix`)."""
        directory = Path(directory)
        tok, idf = prefix + TOKENIZER_FILE, prefix + IDF_FILE
        if (directory / tok).resolve() != self.tokenizer_file.resolve():
            shutil.copyfile(self.tokenizer_file, directory / tok)
        self.write_idf_json(directory / idf)
        return {**self.spec, "tokenizer": tok, "idf": idf}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None, device: str | None = None) -> "IdfQueryEncoder":
        """From `spec["tokenizer"]` and the weight table `spec["idf"]` (paths relative to
        `directory`): an `idf.json` (token → weight) or a safetensors file whose `weight` tensor
        holds one weight per token id (sentence-transformers' SparseStaticEmbedding)."""
        directory = Path(directory or ".")
        tokenizer, table = directory / spec.get("tokenizer", TOKENIZER_FILE), directory / spec.get("idf", IDF_FILE)
        options = dict(max_length=spec.get("max_length", 512), postprocessing=PostProcessing.from_spec(spec.get("postprocessing")))
        if table.suffix != ".safetensors":
            return cls.from_idf_json(tokenizer, table, dim=spec.get("dim"), **options)
        from safetensors.numpy import load_file

        tensors = load_file(str(table))
        if "weight" not in tensors:
            raise LsrError(f"{table}: no 'weight' tensor")
        return cls(tokenizer, np.asarray(tensors["weight"], dtype=np.float32), dim=spec.get("dim"), **options)

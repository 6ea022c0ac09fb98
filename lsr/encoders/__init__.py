"""Encoders: text → `lsr.SparseVectors`. `load_encoder` resolves a name; `resolve_model` picks
the model for `lsr index` / `lsr eval` (falling back to BM25 offline); `encoder_from_spec`
rebuilds the query side from an index directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lsr.encoders.base import Encoder
from lsr.encoders.postprocess import PostProcessing, min_weight, quantize, top_k
from lsr.errors import LsrError

__all__ = [
    "Encoder",
    "load_encoder",
    "resolve_model",
    "chosen_model",
    "encoder_from_spec",
    "ModelUnavailable",
    "PostProcessing",
    "top_k",
    "min_weight",
    "quantize",
    "DEFAULT_MODEL",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill"
MODEL_ENV = "LSR_MODEL"
# what a model needs from the Hub: configs, tokenizers, weight tables, safetensors/bin weights
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model.bin", "*/pytorch_model.bin"]


class ModelUnavailable(LsrError):
    """The model is neither a local folder nor obtainable from the Hugging Face Hub (offline, not cached)."""


def load_encoder(name_or_path: str, device: str | None = None, precision: str = "fp32") -> Encoder:
    """Load an encoder: `bm25` (lexical, no model), a local folder or a Hugging Face id.

    Folders: a sentence-transformers SparseEncoder folder (`modules.json`), a masked-LM
    checkpoint with `idf.json` beside it (inference-free), or a masked-LM checkpoint (SPLADE).
    `precision` (`fp32`, `bf16`, `int8`) is the SPLADE backbone's; other than `fp32` it needs
    an encoder with a SPLADE document model.
    """
    encoder = _load_encoder(name_or_path, device)
    if precision != "fp32":
        _set_precision(encoder, precision, name_or_path)
    return encoder


def _set_precision(encoder: Encoder, precision: str, name: str) -> None:
    """Lower the SPLADE model(s) of `encoder` (itself, or an inference-free/asymmetric
    encoder's loaded document or query model) to `precision`, in place."""
    from lsr.encoders.splade import SpladeEncoder

    parts = [encoder] if isinstance(encoder, SpladeEncoder) else [getattr(encoder, a, None) for a in ("_document", "query")]
    parts = [p for p in parts if isinstance(p, SpladeEncoder)]
    if not parts:
        raise LsrError(f"{name}: --precision {precision} applies to SPLADE models only")
    for part in parts:
        part.set_precision(precision)


def _load_encoder(name_or_path: str, device: str | None = None) -> Encoder:
    if name_or_path == "bm25":
        from lsr.encoders.bm25 import Bm25Encoder

        return Bm25Encoder()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return load_directory(path, device)
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise LsrError(f"{name_or_path}: not a model directory")
    return load_directory(_hub_snapshot(name_or_path), device, name=name_or_path)


def _hub_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as err:  # offline, not cached, no such repository, no network...
        raise ModelUnavailable(f"cannot load model {repo_id!r}: not a local folder, and {_hub_reason(err)}") from None


def _hub_reason(err: Exception) -> str:
    """Why the Hub gave no snapshot, in a few words on one line (hub errors run to paragraphs)."""
    kind = type(err).__name__
    if kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "not in the Hugging Face cache (offline, or the Hub cannot be reached)"
    if kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
        return "no such model on the Hugging Face Hub (or it is private)"
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"the Hugging Face Hub gave none ({kind}: {first[:160]})"


def load_directory(path: Path, device: str | None = None, name: str | None = None) -> Encoder:
    """An encoder from a local model folder (see `load_encoder`)."""
    from lsr.encoders.st_folder import is_sparse_encoder_folder, load_sparse_encoder_folder

    path = Path(path)
    if is_sparse_encoder_folder(path):
        return load_sparse_encoder_folder(path, device)
    if not (path / "config.json").is_file():
        raise LsrError(f"{path}: no modules.json or config.json; not a model folder")
    from lsr.encoders.splade import SpladeEncoder

    splade = SpladeEncoder(path, device=device)
    if (path / "idf.json").is_file():
        from lsr.encoders.inference_free import IdfQueryEncoder, InferenceFreeEncoder

        if not (path / "tokenizer.json").is_file():
            raise LsrError(f"{path}: idf.json needs a tokenizer.json beside it")
        query = IdfQueryEncoder.from_idf_json(path / "tokenizer.json", path / "idf.json", dim=splade.dim)
        return InferenceFreeEncoder(query, None, device, document=splade)
    return splade


def chosen_model(name: str | None = None) -> str:
    """The model `resolve_model` tries first: `name` (--model) > $LSR_MODEL > DEFAULT_MODEL."""
    return name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def resolve_model(name: str | None = None, device: str | None = None, precision: str = "fp32") -> Encoder:
    """The encoder for `lsr index` / `lsr eval`: `name` (--model) > $LSR_MODEL > DEFAULT_MODEL.

    Only the default model falls back: when neither `name` nor $LSR_MODEL is given and
    DEFAULT_MODEL cannot be obtained (offline and not cached), logs one warning line and
    returns BM25. A model asked for by name (a typo included) that cannot be loaded is an
    error (`ModelUnavailable`), as is a local folder that exists but is broken.
    """
    chosen = chosen_model(name)
    try:
        return load_encoder(chosen, device, precision)
    except ModelUnavailable:
        if chosen != DEFAULT_MODEL:  # asked for by --model or $LSR_MODEL
            raise
        logger.warning(
            "the default model %s is not available (offline, not cached); falling back to BM25 "
            "(for a learned model offline: --model PATH or %s=PATH)",
            DEFAULT_MODEL,
            MODEL_ENV,
        )
        from lsr.encoders.bm25 import Bm25Encoder

        return Bm25Encoder()


def _from_model_spec(spec: dict[str, Any], device: str | None = None) -> Encoder:
    """A document-side encoder from its spec (models only: no index directory needed)."""
    if spec.get("type") == "splade":
        from lsr.encoders.splade import SpladeEncoder

        return SpladeEncoder.from_spec(spec, device=device)
    raise LsrError(f"cannot build a document encoder of type {spec.get('type')!r}")


def encoder_from_spec(spec: dict[str, Any], directory: Path, device: str | None = None) -> Encoder:
    """Rebuild the encoder saved with an index (its query side must work from `directory`)."""
    kind = spec.get("type")
    if kind == "bm25":
        from lsr.encoders.bm25 import Bm25Encoder

        return Bm25Encoder.from_directory(directory, spec)
    if kind == "splade":
        from lsr.encoders.splade import SpladeEncoder

        return SpladeEncoder.from_spec(spec, device=device)
    if kind == "inference-free":
        from lsr.encoders.inference_free import InferenceFreeEncoder

        return InferenceFreeEncoder.from_directory(directory, spec, device)
    if kind == "idf":
        from lsr.encoders.inference_free import IdfQueryEncoder

        return IdfQueryEncoder.from_directory(directory, spec)
    if kind == "asymmetric":
        from lsr.encoders.asymmetric import AsymmetricEncoder

        return AsymmetricEncoder(encoder_from_spec(spec["query"], directory, device), spec["document"], device)
    raise LsrError(f"unknown encoder type {kind!r} in the index's spec")

"""The one table of encoder kinds, and the two ways to build an encoder.

`ENCODERS` maps a spec's `type` to its class; every class builds itself with
`from_spec(spec, directory, device)`. `from_spec` rebuilds an encoder from a spec (an
index's query side, the document side of an inference-free or asymmetric encoder);
`load_encoder` loads one by name: `bm25`, a model folder or a Hugging Face id, whose files
`lsr.encoders.folders.folder_spec` turns into a spec. A new kind registers here (or with
`register`) and needs no other change to be saved in and loaded from indexes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsr.encoders.asymmetric import AsymmetricEncoder
from lsr.encoders.base import Encoder
from lsr.encoders.bm25 import Bm25Encoder
from lsr.encoders.decoder import DecoderSpladeEncoder
from lsr.encoders.inference_free import IdfQueryEncoder
from lsr.encoders.splade import SpladeEncoder
from lsr.errors import LsrError

ENCODERS: dict[str, type[Encoder]] = {
    "bm25": Bm25Encoder,
    "splade": SpladeEncoder,
    "decoder": DecoderSpladeEncoder,  # a causal LM, echo input
    "idf": IdfQueryEncoder,
    "inference-free": AsymmetricEncoder,  # an IdfQueryEncoder query side
    "asymmetric": AsymmetricEncoder,
}

# what a model needs from the Hub: configs, tokenizers, weight tables, safetensors/bin weights
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model.bin", "*/pytorch_model.bin"]


class ModelUnavailable(LsrError):
    """The model is neither a local folder nor obtainable from the Hugging Face Hub (offline, not cached)."""


def register(kind: str, cls: type[Encoder]) -> None:
    """Make specs of type `kind` build through `cls.from_spec`."""
    ENCODERS[kind] = cls


def from_spec(spec: dict[str, Any], directory: Path | None = None, device: str | None = None) -> Encoder:
    """The encoder `spec` describes, with its files (if any) in `directory`."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in ENCODERS:
        raise LsrError(f"unknown encoder type {kind!r} (known: {', '.join(sorted(ENCODERS))})")
    return ENCODERS[kind].from_spec(spec, directory, device)


def load_encoder(name_or_path: str, device: str | None = None, precision: str = "fp32") -> Encoder:
    """Load an encoder: `bm25` (lexical, no model), a local model folder or a Hugging Face id.

    Folders (see `lsr.encoders.folders`): a sentence-transformers SparseEncoder folder
    (`modules.json`), a masked-LM checkpoint with `idf.json` beside it (inference-free), a
    masked-LM checkpoint (SPLADE), or a causal-LM checkpoint or LoRA adapter (decoder). `precision` (`fp32`, `bf16`, `int8`) is the SPLADE
    models'; other than `fp32` it needs an encoder with a SPLADE model.
    """
    from lsr.encoders.folders import folder_spec

    if name_or_path == "bm25":
        spec, directory = Bm25Encoder().spec, None
    else:
        directory = _model_folder(name_or_path)
        spec = folder_spec(directory)
    if precision != "fp32":
        spec = _with_precision(spec, precision, name_or_path)
    encoder = from_spec(spec, directory, device)
    if isinstance(encoder, AsymmetricEncoder):
        # the document model now: a broken one fails here, not mid-indexing; its full spec
        # (resolved lengths, dimension) is the one recorded
        encoder = AsymmetricEncoder(encoder.query, encoder.document, directory, device)
    return encoder


def _with_precision(spec: dict[str, Any], precision: str, name: str) -> dict[str, Any]:
    """`spec` with every SPLADE model in it (itself, or a query or document side) at `precision`."""
    if spec["type"] == "splade":
        return {**spec, "precision": precision}
    parts = {side: _with_precision(spec[side], precision, name) for side in ("query", "document")
             if isinstance(spec.get(side), dict) and spec[side].get("type") == "splade"}  # fmt: skip
    if not parts:
        raise LsrError(f"{name}: --precision {precision} applies to SPLADE models only")
    return {**spec, **parts}


def _model_folder(name_or_path: str) -> Path:
    """`name_or_path` as a local folder: itself, or a Hugging Face snapshot of it."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise LsrError(f"{name_or_path}: not a model directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=HUB_PATTERNS))
    except Exception as err:  # offline, not cached, no such repository, no network...
        raise ModelUnavailable(f"cannot load model {name_or_path!r}: not a local folder, and {_hub_reason(err)}") from None


def _hub_reason(err: Exception) -> str:
    """Why the Hub gave no snapshot, in a few words on one line (hub errors run to paragraphs)."""
    kind = type(err).__name__
    if kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "not in the Hugging Face cache (offline, or the Hub cannot be reached)"
    if kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
        return "no such model on the Hugging Face Hub (or it is private)"
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"the Hugging Face Hub gave none ({kind}: {first[:160]})"

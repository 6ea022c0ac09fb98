"""Encoders: text → `lsr.SparseVectors`.

`load_encoder(name_or_path)` loads one by name (`bm25`, a model folder, a Hugging Face id);
`from_spec(spec, directory)` rebuilds the one saved with an index; both go through the
table of kinds in `registry.py`. `resolve_model` picks the model for `lsr index` /
`lsr eval` (falling back to BM25 offline).
"""

from __future__ import annotations

import logging
import os

from lsr.encoders.base import Encoder
from lsr.encoders.postprocess import PostProcessing, min_weight, quantize, top_k
from lsr.encoders.registry import ENCODERS, ModelUnavailable, from_spec, load_encoder, register

__all__ = [
    "Encoder",
    "ENCODERS",
    "register",
    "from_spec",
    "load_encoder",
    "resolve_model",
    "chosen_model",
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
        return load_encoder("bm25")

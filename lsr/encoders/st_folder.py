"""sentence-transformers `SparseEncoder` folders (`modules.json`) mapped to our encoders.

Supported pipelines:

* `MLMTransformer` (or `Transformer` with `transformer_task="fill-mask"`) + `SpladePooling`
  → `SpladeEncoder` (pooling `max`/`sum`, activation `relu`/`log1p_relu`; SpladePooling's
  `chunk_size` only bounds memory and is not needed: our head never materialises the logits);
* `SparseStaticEmbedding` → `IdfQueryEncoder` (weights from `model.safetensors` or an idf json);
* `Router` with a `query` and a `document` route of the above → `InferenceFreeEncoder` when the
  query route is a SparseStaticEmbedding, otherwise `AsymmetricEncoder`.

Anything else raises `LsrError` naming the unsupported modules. Reading the folder imports
neither torch nor sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lsr.encoders.base import Encoder
from lsr.errors import LsrError

MODULES_FILE = "modules.json"
SUPPORTED = ("MLMTransformer", "Transformer", "SpladePooling", "SparseStaticEmbedding", "Router")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise LsrError(f"{path}: malformed JSON ({err})") from None


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def is_sparse_encoder_folder(directory: Path) -> bool:
    return (Path(directory) / MODULES_FILE).is_file()


def load_sparse_encoder_folder(directory: Path, device: str | None = None, lazy_documents: bool = False) -> Encoder:
    """Build our encoder from a sentence-transformers SparseEncoder folder.

    With `lazy_documents`, the document model of an inference-free folder is loaded only when
    documents are encoded (queries then need no torch).
    """
    directory = Path(directory)
    modules = _read_json(directory / MODULES_FILE)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise LsrError(f"{directory / MODULES_FILE}: expected a list of modules with a 'type'")
    pipeline = [(directory / m.get("path", ""), _short(m["type"])) for m in sorted(modules, key=lambda m: m.get("idx", 0))]
    if len(pipeline) == 1 and pipeline[0][1] == "Router":
        return _router(pipeline[0][0], directory, device, lazy_documents)
    return _pipeline(pipeline, directory, device)


def _unsupported(pipeline: list[tuple[Path, str]], where: Path) -> LsrError:
    names = [t for _, t in pipeline]
    bad = [t for t in names if t not in SUPPORTED]
    what = f"unsupported modules {bad}" if bad else f"an unsupported module sequence {names}"
    return LsrError(
        f"{where / MODULES_FILE}: {what}; supported: MLMTransformer (or fill-mask Transformer) + SpladePooling, "
        "SparseStaticEmbedding, and a Router of those"
    )


def _splade_spec(pipeline: list[tuple[Path, str]], where: Path) -> dict[str, Any]:
    (model_dir, first), (pool_dir, second) = pipeline
    if first == "Transformer":
        cfg = _read_json(model_dir / "sentence_bert_config.json") or {}
        task = cfg.get("transformer_task", "feature-extraction")
        if task != "fill-mask":
            raise LsrError(f"{model_dir}: a Transformer module with task {task!r} has no MLM head; SPLADE needs 'fill-mask'")
    pool = _read_json(pool_dir / "config.json") or {}
    bert_cfg = _read_json(model_dir / "sentence_bert_config.json") or {}
    spec: dict[str, Any] = {
        "type": "splade",
        "model": str(model_dir.resolve()),
        "pooling": pool.get("pooling_strategy", "max"),
        "activation": pool.get("activation_function", "relu"),
    }
    if bert_cfg.get("max_seq_length"):
        spec["max_length"] = int(bert_cfg["max_seq_length"])
    return spec


def _static(path: Path):
    from lsr.encoders.inference_free import IDF_FILE, TOKENIZER_FILE, IdfQueryEncoder

    cfg = _read_json(path / "config.json") or {}
    tok_cfg = _read_json(path / "tokenizer_config.json") or {}
    max_length = int(min(tok_cfg.get("model_max_length") or 512, 1_000_000))
    tokenizer = path / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise LsrError(f"{path}: SparseStaticEmbedding without a tokenizer.json (a fast tokenizer is needed)")
    idf = cfg.get("path")
    if idf and str(idf).endswith(".json"):
        idf_path = Path(idf) if Path(idf).is_absolute() else path / idf
        return IdfQueryEncoder.from_idf_json(tokenizer, idf_path, max_length=max_length)
    weights_file = path / "model.safetensors"
    if weights_file.is_file():
        from safetensors.numpy import load_file

        tensors = load_file(str(weights_file))
        if "weight" not in tensors:
            raise LsrError(f"{weights_file}: no 'weight' tensor")
        return IdfQueryEncoder(tokenizer, np.asarray(tensors["weight"], dtype=np.float32), max_length=max_length)
    if (path / IDF_FILE).is_file():
        return IdfQueryEncoder.from_idf_json(tokenizer, path / IDF_FILE, max_length=max_length)
    raise LsrError(f"{path}: SparseStaticEmbedding without model.safetensors or {IDF_FILE}")


def _pipeline(pipeline: list[tuple[Path, str]], where: Path, device: str | None, lazy: bool = False):
    names = [t for _, t in pipeline]
    if len(names) == 2 and names[0] in ("MLMTransformer", "Transformer") and names[1] == "SpladePooling":
        spec = _splade_spec(pipeline, where)
        if lazy:
            return spec
        from lsr.encoders.splade import SpladeEncoder

        return SpladeEncoder.from_spec(spec, device=device)
    if names == ["SparseStaticEmbedding"]:
        return _static(pipeline[0][0])
    raise _unsupported(pipeline, where)


def _router(path: Path, where: Path, device: str | None, lazy: bool) -> Encoder:
    from lsr.encoders.inference_free import IdfQueryEncoder, InferenceFreeEncoder

    cfg = _read_json(path / "router_config.json") or _read_json(path / "config.json")
    if not cfg or "types" not in cfg or "structure" not in cfg:
        raise LsrError(f"{path}: a Router without router_config.json ('types' and 'structure')")
    routes = {
        name: [(path / mid, _short(cfg["types"][mid])) for mid in ids] for name, ids in cfg["structure"].items()
    }
    if set(routes) != {"query", "document"}:
        raise LsrError(f"{path / 'router_config.json'}: expected routes 'query' and 'document', got {sorted(routes)}")
    query = _pipeline(routes["query"], path, device)
    if isinstance(query, IdfQueryEncoder):
        doc = _pipeline(routes["document"], path, device, lazy=True)  # a spec: load on demand
        if isinstance(doc, IdfQueryEncoder):
            raise LsrError(f"{path}: both routes are SparseStaticEmbedding; no document model")
        enc = InferenceFreeEncoder(query, doc, device)
        if not lazy:
            enc.document  # load now: a bad document model fails at load time, not mid-indexing
        return enc
    document = _pipeline(routes["document"], path, device)
    from lsr.encoders.asymmetric import AsymmetricEncoder

    return AsymmetricEncoder(query, document)

"""Model folders → encoder specs, which `lsr.encoders.registry.from_spec` builds.

* a sentence-transformers `SparseEncoder` folder (`modules.json`):
  * `MLMTransformer` (or `Transformer` with `transformer_task="fill-mask"`) + `SpladePooling`
    → `splade` (pooling `max`/`sum`, activation `relu`/`log1p_relu`; SpladePooling's
    `chunk_size` only bounds memory and is not needed: our head never materialises the logits);
  * `SparseStaticEmbedding` → `idf` (weights from `model.safetensors` or an idf json);
  * `Router` with a `query` and a `document` route of the above → `inference-free` when the
    query route is a SparseStaticEmbedding, otherwise `asymmetric`;
* a causal-LM checkpoint (`config.json` whose architectures end in `ForCausalLM`, or GPT-2's
  `LMHeadModel`) or a LoRA adapter folder (`adapter_config.json`) → `decoder`, with the echo
  template and pooling of an `lsr_decoder.json` beside it (written by `lsr train`);
* a masked-LM checkpoint (`config.json`) → `splade`, or `inference-free` with an `idf.json`
  (OpenSearch's layout) beside it.

Anything else raises `LsrError` naming the file. Reading a folder imports neither torch nor
sentence-transformers; file paths in the specs are absolute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lsr.encoders.decoder import SETTINGS_FILE, is_causal_lm
from lsr.errors import LsrError

MODULES_FILE = "modules.json"
SUPPORTED = ("MLMTransformer", "Transformer", "SpladePooling", "SparseStaticEmbedding", "Router")
TOKENIZER_FILE = "tokenizer.json"
IDF_FILE = "idf.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise LsrError(f"{path}: malformed JSON ({err})") from None


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def folder_spec(directory: Path) -> dict[str, Any]:
    """The spec of the encoder stored in the model folder `directory`."""
    directory = Path(directory).resolve()
    if (directory / MODULES_FILE).is_file():
        return _sparse_encoder_spec(directory)
    if (directory / "adapter_config.json").is_file():
        return _decoder_spec(directory)
    config = _read_json(directory / "config.json")
    if isinstance(config, dict) and is_causal_lm(config):
        return _decoder_spec(directory)
    if config is None:
        raise LsrError(f"{directory}: no modules.json or config.json; not a model folder")
    splade = {"type": "splade", "model": str(directory)}
    if not (directory / IDF_FILE).is_file():
        return splade
    if not (directory / TOKENIZER_FILE).is_file():
        raise LsrError(f"{directory}: idf.json needs a tokenizer.json beside it")
    query = {"type": "idf", "tokenizer": str(directory / TOKENIZER_FILE), "idf": str(directory / IDF_FILE)}
    if isinstance(config, dict) and config.get("vocab_size"):
        query["dim"] = int(config["vocab_size"])
    return {"type": "inference-free", "query": query, "document": splade}


def _decoder_spec(directory: Path) -> dict[str, Any]:
    settings = _read_json(directory / SETTINGS_FILE) or {}
    if not isinstance(settings, dict):
        raise LsrError(f"{directory / SETTINGS_FILE}: expected a table")
    keys = ("template", "pooling", "activation", "max_length", "padding_side", "bidirectional", "postprocessing")
    return {"type": "decoder", "model": str(directory), **{k: settings[k] for k in keys if k in settings}}


def _sparse_encoder_spec(directory: Path) -> dict[str, Any]:
    modules = _read_json(directory / MODULES_FILE)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise LsrError(f"{directory / MODULES_FILE}: expected a list of modules with a 'type'")
    pipeline = [(directory / m.get("path", ""), _short(m["type"])) for m in sorted(modules, key=lambda m: m.get("idx", 0))]
    if len(pipeline) == 1 and pipeline[0][1] == "Router":
        return _router(pipeline[0][0])
    return _pipeline(pipeline, directory)


def _unsupported(pipeline: list[tuple[Path, str]], where: Path) -> LsrError:
    names = [t for _, t in pipeline]
    bad = [t for t in names if t not in SUPPORTED]
    what = f"unsupported modules {bad}" if bad else f"an unsupported module sequence {names}"
    return LsrError(
        f"{where / MODULES_FILE}: {what}; supported: MLMTransformer (or fill-mask Transformer) + SpladePooling, "
        "SparseStaticEmbedding, and a Router of those"
    )


def _splade_spec(pipeline: list[tuple[Path, str]]) -> dict[str, Any]:
    (model_dir, first), (pool_dir, second) = pipeline
    bert_cfg = _read_json(model_dir / "sentence_bert_config.json") or {}
    if first == "Transformer":
        task = bert_cfg.get("transformer_task", "feature-extraction")
        if task != "fill-mask":
            raise LsrError(f"{model_dir}: a Transformer module with task {task!r} has no MLM head; SPLADE needs 'fill-mask'")
    pool = _read_json(pool_dir / "config.json") or {}
    spec: dict[str, Any] = {
        "type": "splade",
        "model": str(model_dir.resolve()),
        "pooling": pool.get("pooling_strategy", "max"),
        "activation": pool.get("activation_function", "relu"),
    }
    if bert_cfg.get("max_seq_length"):
        spec["max_length"] = int(bert_cfg["max_seq_length"])
    return spec


def _static_spec(path: Path) -> dict[str, Any]:
    """A SparseStaticEmbedding module: its tokenizer and weight table."""
    cfg = _read_json(path / "config.json") or {}
    tok_cfg = _read_json(path / "tokenizer_config.json") or {}
    spec: dict[str, Any] = {"type": "idf", "tokenizer": str(path / TOKENIZER_FILE),
                            "max_length": int(min(tok_cfg.get("model_max_length") or 512, 1_000_000))}  # fmt: skip
    if not (path / TOKENIZER_FILE).is_file():
        raise LsrError(f"{path}: SparseStaticEmbedding without a tokenizer.json (a fast tokenizer is needed)")
    idf = cfg.get("path")
    for table in ([path / idf] if idf and str(idf).endswith(".json") else []) + [path / "model.safetensors", path / IDF_FILE]:
        if table.is_file():
            return {**spec, "idf": str(table)}
    raise LsrError(f"{path}: SparseStaticEmbedding without model.safetensors or {IDF_FILE}")


def _pipeline(pipeline: list[tuple[Path, str]], where: Path) -> dict[str, Any]:
    names = [t for _, t in pipeline]
    if len(names) == 2 and names[0] in ("MLMTransformer", "Transformer") and names[1] == "SpladePooling":
        return _splade_spec(pipeline)
    if names == ["SparseStaticEmbedding"]:
        return _static_spec(pipeline[0][0])
    raise _unsupported(pipeline, where)


def _router(path: Path) -> dict[str, Any]:
    cfg = _read_json(path / "router_config.json") or _read_json(path / "config.json")
    if not cfg or "types" not in cfg or "structure" not in cfg:
        raise LsrError(f"{path}: a Router without router_config.json ('types' and 'structure')")
    routes = {
        name: [(path / mid, _short(cfg["types"][mid])) for mid in ids] for name, ids in cfg["structure"].items()
    }
    if set(routes) != {"query", "document"}:
        raise LsrError(f"{path / 'router_config.json'}: expected routes 'query' and 'document', got {sorted(routes)}")
    query, document = _pipeline(routes["query"], path), _pipeline(routes["document"], path)
    if document["type"] == "idf":
        raise LsrError(f"{path}: the document route is a SparseStaticEmbedding; no document model")
    return {"type": "inference-free" if query["type"] == "idf" else "asymmetric", "query": query, "document": document}

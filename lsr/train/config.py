"""Training configuration: a TOML file (or a dict) checked against `SCHEMA`.

Every key has a type and a default (`REQUIRED` when it has none); unknown sections or keys,
missing required keys and mistyped values raise `LsrError` with one line naming the key,
e.g. `run.toml: [trainer] max_steps: expected an integer`. Relative paths in the file are
resolved against the file's folder.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from lsr.errors import LsrError

REQUIRED = object()

# section -> key -> (type, default, choices or None)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any, tuple | None]]] = {
    "model": {
        "base": (str, REQUIRED, None),
        "kind": (str, "splade", ("splade", "inference-free", "asymmetric", "decoder")),
        "query_base": (str, "", None),
        "pooling": (str, "max", ("max", "sum")),
        "activation": (str, "relu", ("relu", "log1p_relu")),
        "query_max_length": (int, 64, None),
        "doc_max_length": (int, 256, None),
        "gradient_checkpointing": (bool, False, None),
        "query_lr": (float, None, None),  # None: 1e-3 (inference-free table), [trainer] lr (asymmetric)
        "template": (str, "{text}\n{text}", None),  # decoder: the echo template (two {text} slots)
        "bidirectional": (bool, False, None),  # decoder: attend both ways (a non-causal mask)
        "lora": (dict, {}, None),  # decoder: LoRA adapters {r, alpha, target_modules, dropout}; {} trains every weight
    },
    "data": {
        "dataset": (str, REQUIRED, None),
        "split": (str, "train", None),
        "corpus": (str, "", None),
        "triples": (str, "", None),
        "teacher_scores": (list, [], None),
        "negatives": (str, "bm25", None),
        "negatives_depth": (int, 100, None),
        "skip_top": (int, 0, None),
        "n_negatives": (int, 1, None),
        "cache_dir": (str, "", None),
        "seed": (int, 0, None),
    },
    "loss": {
        "kind": (str, "infonce", ("infonce", "margin-mse", "kl", "disco")),
        "temperature": (float, 1.0, None),
        "in_batch": (bool, True, None),
        "teacher_scale": (float, 1.0, None),
        "normalize_teachers": (bool, False, None),
    },
    "regularizer": {
        "kind": (str, "flops", ("flops", "l1", "idf-flops", "none")),
        "lambda_q": (float, 1e-3, None),
        "lambda_d": (float, 1e-3, None),
        "warmup_steps": (int, 0, None),
    },
    "trainer": {
        "max_steps": (int, REQUIRED, None),
        "batch_size": (int, 16, None),
        "lr": (float, 2e-5, None),
        "weight_decay": (float, 0.01, None),
        "warmup_steps": (int, 0, None),
        "grad_accum": (int, 1, None),
        "max_grad_norm": (float, 1.0, None),
        "seed": (int, 0, None),
        "bf16": (bool, True, None),
        "device": (str, "", None),
        "threads": (int, 0, None),
        "log_steps": (int, 10, None),
        "save_steps": (int, 0, None),
        "eval_steps": (int, 0, None),
        "eval_split": (str, "", None),
        "eval_dataset": (str, "", None),
    },
    "output": {
        "dir": (str, REQUIRED, None),
    },
}
PATH_KEYS = {("model", "base"), ("model", "query_base"), ("data", "dataset"), ("data", "corpus"), ("data", "triples"), ("data", "cache_dir"),
             ("data", "negatives"), ("trainer", "eval_dataset"), ("output", "dir")}
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list", dict: "a table"}
# [model] lora keys: (type, default); `target_modules` names the linear layers to adapt
LORA_KEYS: dict[str, tuple[type, Any]] = {"r": (int, 8), "alpha": (float, 16.0), "dropout": (float, 0.0),
                                          "target_modules": (list, ["q_proj", "k_proj", "v_proj", "o_proj"])}


def _check(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise LsrError(f"{where}: expected {TYPE_NAMES[kind]}")
    return value


def validate(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Defaults filled in, every key checked; one `LsrError` line for the first problem."""
    if not isinstance(raw, dict):
        raise LsrError(f"{source}: expected a table of sections")
    out: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in SCHEMA:
            raise LsrError(f"{source}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise LsrError(f"{source}: [{section}] must be a table")
        for key in values:
            if key not in SCHEMA[section]:
                raise LsrError(f"{source}: [{section}] {key}: unknown key (known: {', '.join(SCHEMA[section])})")
    for section, keys in SCHEMA.items():
        values = raw.get(section, {})
        out[section] = {}
        for key, (kind, default, choices) in keys.items():
            where = f"{source}: [{section}] {key}"
            if key not in values:
                if default is REQUIRED:
                    raise LsrError(f"{where}: missing (required)")
                out[section][key] = copy.deepcopy(default)
                continue
            value = _check(values[key], kind, where)
            if choices and value not in choices:
                raise LsrError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
            if kind is int and key not in ("seed", "skip_top", "warmup_steps", "save_steps", "eval_steps", "threads") and value < 1:
                raise LsrError(f"{where}: expected a positive integer, got {value}")
            if kind is int and value < 0:
                raise LsrError(f"{where}: expected a non-negative integer, got {value}")
            if kind is list and not all(isinstance(x, str) for x in value):
                raise LsrError(f"{where}: expected a list of file names")
            out[section][key] = value
    if out["loss"]["kind"] in ("margin-mse", "kl", "disco") and not out["data"]["teacher_scores"]:
        raise LsrError(f"{source}: [loss] kind: {out['loss']['kind']!r} needs [data] teacher_scores")
    if out["model"]["query_base"] and out["model"]["kind"] != "asymmetric":
        raise LsrError(f"{source}: [model] query_base: needs [model] kind = 'asymmetric'")
    out["model"]["lora"] = _lora(out["model"]["lora"], f"{source}: [model] lora")
    decoder_only = [k for k in ("lora", "template", "bidirectional") if out["model"][k] != SCHEMA["model"][k][1]]
    if decoder_only and out["model"]["kind"] != "decoder":
        raise LsrError(f"{source}: [model] {decoder_only[0]}: needs [model] kind = 'decoder'")
    if out["regularizer"]["kind"] == "idf-flops" and out["model"]["kind"] != "inference-free":
        raise LsrError(f"{source}: [regularizer] kind: 'idf-flops' needs [model] kind = 'inference-free'")
    return out


def _lora(values: dict[str, Any], where: str) -> dict[str, Any]:
    """The `[model] lora` table with defaults filled in ({} stays {}: no LoRA)."""
    if not values:
        return {}
    unknown = sorted(set(values) - set(LORA_KEYS))
    if unknown:
        raise LsrError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(LORA_KEYS)})")
    out = {}
    for key, (kind, default) in LORA_KEYS.items():
        value = _check(values[key], kind, f"{where} {key}") if key in values else copy.deepcopy(default)
        if kind is list and not (value and all(isinstance(x, str) for x in value)):
            raise LsrError(f"{where} {key}: expected a non-empty list of module names")
        if key == "r" and value < 1:
            raise LsrError(f"{where} r: expected a positive integer, got {value}")
        out[key] = value
    return out


def _resolve(cfg: dict[str, Any], base: Path) -> None:
    """Relative paths resolved against `base` (model names that are not paths stay as given)."""
    for section, key in PATH_KEYS:
        value = cfg[section][key]
        if not value or value == "bm25" or Path(value).is_absolute():
            continue
        candidate = base / value
        if key in ("base", "query_base", "negatives") and not candidate.exists() and not value.startswith("."):
            continue  # a Hugging Face id
        cfg[section][key] = os.path.normpath(candidate)
    cfg["data"]["teacher_scores"] = [os.path.normpath(base / p) for p in cfg["data"]["teacher_scores"]]


def load_config(config: str | Path | dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A validated configuration from a TOML path or a dict; `overrides` (`{"trainer":
    {"max_steps": 10}}`) replace keys before validation."""
    if isinstance(config, dict):
        raw, source, base = copy.deepcopy(config), "config", Path.cwd()
    else:
        import tomllib

        path = Path(config)
        source, base = str(path), path.resolve().parent
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise LsrError(f"{path}: cannot read ({err.strerror or err})") from None
        except UnicodeDecodeError:
            raise LsrError(f"{path}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as err:
            raise LsrError(f"{path}: invalid TOML: {err}") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    cfg = validate(raw, source)
    _resolve(cfg, base)
    return cfg

"""Trainable sparse encoders: siamese SPLADE, inference-free, asymmetric and decoder-only (LoRA).

Each masked LM runs up to its output embeddings (`lsr.encoders.splade.mlm_hidden`) and the
decoder + activation + max pooling through `lsr.kernels.splade_max`, so the
`[batch, seq, vocab]` logits are never materialised, in training either.

`save(directory)` writes a folder that `lsr.load_encoder` and sentence-transformers'
`SparseEncoder` both load: a Hugging Face masked-LM folder (config, safetensors, tokenizer);
the inference-free model adds `idf.json` (token → query weight) beside it; the asymmetric
model writes a sentence-transformers `Router` folder with a `query` and a `document` route.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lsr.errors import LsrError

KINDS = ("splade", "inference-free", "asymmetric", "decoder")
DEFAULT_QUERY_WEIGHTS_LR = 1e-3  # inference-free: the query weight table learns much faster than the LM


class _HeadModel(torch.nn.Module):
    """What the trainer asks of a model with one LM head (`self.head`): its device and width."""

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def vocab_size(self) -> int:
        return self.head.weight.shape[0]


class SpladeModel(_HeadModel):
    """SPLADE over any `AutoModelForMaskedLM`; `encode(texts)` → dense `[B, V]` weights
    (differentiable)."""

    def __init__(self, base: str | Path, pooling: str = "max", activation: str = "relu", gradient_checkpointing: bool = False) -> None:
        super().__init__()
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(base))
            self.mlm = AutoModelForMaskedLM.from_pretrained(str(base), dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise LsrError(f"cannot load a masked-LM model from {base}: {err}") from None
        self.head = self.mlm.get_output_embeddings()
        if self.head is None or not hasattr(self.head, "weight"):
            raise LsrError(f"{base}: the model has no output embeddings (MLM decoder)")
        self.pooling, self.activation = pooling, activation
        self.wants_token_type = "token_type_ids" in inspect.signature(self.mlm.forward).parameters
        if gradient_checkpointing:  # transformers >= 5.x renamed it; older releases have only the first
            enable = getattr(self.mlm, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.mlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.name = str(base)

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt", return_token_type_ids=False
        )
        if self.wants_token_type:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        return {k: v.to(self.device) for k, v in inputs.items()}

    def encode(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        from lsr.encoders.splade import mlm_hidden
        from lsr.kernels import splade_max

        inputs = self.tokenize(texts, max_length)
        hidden = mlm_hidden(self.mlm, self.head, inputs, self.name)
        return splade_max(hidden, self.head.weight, getattr(self.head, "bias", None), inputs["attention_mask"], self.activation, pooling=self.pooling)

    def encode_queries(self, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
        return self.encode(texts, max_length)

    def encode_documents(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        return self.encode(texts, max_length)

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for name, p in self.mlm.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        return [{"params": decay, "lr": lr, "weight_decay": weight_decay}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.mlm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def corpus_idf(tokenizer: Any, texts: Sequence[str], vocab_size: int, max_length: int = 512) -> np.ndarray:
    """BM25-style idf `log(1 + (N - df + 0.5) / (df + 0.5))` of each token id over `texts`
    (tokens without special tokens, truncated to `max_length`); unseen tokens get df = 0."""
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(texts), 1024):
        enc = tokenizer(list(texts[start : start + 1024]), add_special_tokens=False, truncation=True, max_length=max_length)
        for ids in enc["input_ids"]:
            u = np.unique(np.asarray(ids, dtype=np.int64))
            df[u[u < vocab_size]] += 1
    n = len(texts)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


class InferenceFreeModel(SpladeModel):
    """Documents through SPLADE (trained); a query is the sum over its distinct tokens of a
    trainable per-token weight (`query_weights`, initialised from `idf`, kept ≥ 0 by a ReLU):
    token presence × weight, as `lsr.encoders.inference_free.IdfQueryEncoder` computes it."""

    def __init__(self, base: str | Path, idf: np.ndarray, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        V = self.vocab_size
        table = np.zeros(V, dtype=np.float32)
        table[: min(V, len(idf))] = np.asarray(idf, dtype=np.float32)[:V]
        self.query_weights = torch.nn.Parameter(torch.from_numpy(table))
        self.register_buffer("idf", torch.from_numpy(table.copy()), persistent=False)

    def encode_queries(self, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
        V = self.vocab_size
        presence = torch.zeros(len(texts), V, device=self.device)
        for i, ids in enumerate(enc["input_ids"]):
            if ids:
                presence[i, torch.tensor([t for t in ids if t < V], dtype=torch.long, device=self.device)] = 1.0
        return presence * torch.relu(self.query_weights)

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        groups = super().param_groups(lr, weight_decay)
        table_lr = query_lr if query_lr is not None else DEFAULT_QUERY_WEIGHTS_LR
        groups.append({"params": [self.query_weights], "lr": table_lr, "weight_decay": 0.0})
        return groups

    def save(self, directory: str | Path) -> None:
        from lsr.encoders.inference_free import IdfQueryEncoder

        super().save(directory)
        directory = Path(directory)
        tok = directory / "tokenizer.json"
        if not tok.is_file():
            raise LsrError(f"{self.name}: an inference-free model needs a fast tokenizer (tokenizer.json)")
        weights = torch.relu(self.query_weights.detach()).float().cpu().numpy()
        IdfQueryEncoder(tok, weights, dim=self.vocab_size).write_idf_json(directory / "idf.json")


def vocabulary_difference(base: str | Path, query_base: str | Path) -> str | None:
    """Why the checkpoints `query_base` and `base` cannot share one term space (their
    tokenizers map tokens to ids differently, or their vocabulary sizes differ), or None."""
    from transformers import AutoConfig, AutoTokenizer

    vocabs, sizes = [], []
    for name in (base, query_base):
        try:
            vocabs.append(AutoTokenizer.from_pretrained(str(name)).get_vocab())
            sizes.append(AutoConfig.from_pretrained(str(name)).vocab_size)
        except (OSError, ValueError, KeyError) as err:
            raise LsrError(f"cannot load a masked-LM model from {name}: {err}") from None
    if vocabs[0] == vocabs[1] and sizes[0] == sizes[1]:
        return None
    moved = sum(1 for token, i in vocabs[1].items() if vocabs[0].get(token) != i)
    return (f"{query_base} has another vocabulary than {base} ({len(vocabs[1]):,} vs {len(vocabs[0]):,} tokens, "
            f"{moved:,} absent or at other ids; output sizes {sizes[1]:,} vs {sizes[0]:,}): "
            "an asymmetric model needs one vocabulary for queries and documents")


# sentence-transformers type names: the v5 module paths, which v6 maps to its own modules
ST_ROUTER = "sentence_transformers.models.Router"
ST_MLM = "sentence_transformers.sparse_encoder.models.MLMTransformer"
ST_POOLING = "sentence_transformers.sparse_encoder.models.SpladePooling"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


class AsymmetricSpladeModel(torch.nn.Module):
    """Queries through one SPLADE model (`query`, from `query_base`), documents through
    another (`document`, from `base`): independent weights over one vocabulary. The same
    checkpoint for both gives two independent copies of it."""

    def __init__(self, base: str | Path, query_base: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__()
        query_base = query_base or base
        reason = vocabulary_difference(base, query_base) if str(query_base) != str(base) else None
        if reason:
            raise LsrError(reason)
        self.document = SpladeModel(base, **kwargs)
        self.query = SpladeModel(query_base, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.document.device

    @property
    def vocab_size(self) -> int:
        return self.document.vocab_size

    def encode_queries(self, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
        return self.query.encode(texts, max_length)

    def encode_documents(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        return self.document.encode(texts, max_length)

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        """The document model at `lr`, the query model at `query_lr` (default: `lr`)."""
        return self.document.param_groups(lr, weight_decay) + self.query.param_groups(lr if query_lr is None else query_lr, weight_decay)

    def save(self, directory: str | Path) -> None:
        """A sentence-transformers `SparseEncoder` folder: one `Router` module whose `query`
        and `document` routes are each an MLMTransformer (a masked-LM folder) + SpladePooling."""
        directory = Path(directory)
        types: dict[str, str] = {}
        structure: dict[str, list[str]] = {}
        for route, model in (("query", self.query), ("document", self.document)):
            mlm, pooling = f"{route}_0_MLMTransformer", f"{route}_1_SpladePooling"
            model.save(directory / mlm)
            _write_json(directory / mlm / "sentence_bert_config.json", {"do_lower_case": False})
            _write_json(directory / pooling / "config.json", {"pooling_strategy": model.pooling, "activation_function": model.activation})
            types.update({mlm: ST_MLM, pooling: ST_POOLING})
            structure[route] = [mlm, pooling]
        _write_json(directory / "router_config.json",
                    {"types": types, "structure": structure, "parameters": {"default_route": "document", "allow_empty_key": True}})
        _write_json(directory / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_ROUTER}])
        _write_json(directory / "config_sentence_transformers.json",
                    {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
                     "similarity_fn_name": "dot"})


class DecoderSpladeModel(_HeadModel):
    """SPLADE over a causal LM with echo input (`lsr.encoders.decoder`), trainable in full or
    through LoRA adapters (`lora`: `{r, alpha, dropout, target_modules}`, needs peft), its
    attention causal or, with `bidirectional`, both ways: the final hidden states come from
    `mlm_hidden`, the LM head + pooling from `splade_max`."""

    def __init__(self, base: str | Path, pooling: str = "max", activation: str = "relu", gradient_checkpointing: bool = False,
                 template: str = "{text}\n{text}", lora: dict[str, Any] | None = None, bidirectional: bool = False) -> None:
        super().__init__()
        from lsr.encoders.decoder import EchoTokenizer, check_bidirectional, load_causal_lm

        self.tokenizer, lm = load_causal_lm(base)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional:
            check_bidirectional(lm, str(base))
        self.echo = EchoTokenizer(self.tokenizer, template)
        if gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = dict(lora or {})
        if self.lora:
            lm = _with_lora(lm, self.lora, str(base), gradient_checkpointing)
        self.lm = lm
        self.pooling, self.activation, self.name = pooling, activation, str(base)

    @property
    def head(self) -> torch.nn.Module:
        return self.lm.get_output_embeddings()

    def encode(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        from lsr.encoders.decoder import bidirectional_inputs, decoder_weights
        from lsr.encoders.splade import mlm_hidden

        inputs, pool = self.echo.tensors(texts, max_length, self.device)
        if self.bidirectional:
            inputs = bidirectional_inputs(inputs, self.lm)
        hidden = mlm_hidden(self.lm, self.head, inputs, self.name)
        return decoder_weights(self.lm, hidden, pool, self.activation, self.pooling)

    encode_queries = SpladeModel.encode_queries
    encode_documents = SpladeModel.encode_documents

    def param_groups(self, lr: float, weight_decay: float, query_lr: float | None = None) -> list[dict[str, Any]]:
        decay = [p for p in self.lm.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.lm.parameters() if p.requires_grad and p.ndim < 2]
        return [{"params": decay, "lr": lr, "weight_decay": weight_decay}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]

    def save(self, directory: str | Path) -> None:
        """A causal-LM folder (LoRA merged into a copy of the weights) with the tokenizer and
        `lsr_decoder.json` (echo template, pooling, activation, attention) for `lsr.load_encoder`."""
        import copy

        from lsr.encoders.decoder import SETTINGS_FILE

        directory = Path(directory)
        merged = copy.deepcopy(self.lm).merge_and_unload() if self.lora else self.lm
        merged.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        _write_json(directory / SETTINGS_FILE, {"template": self.echo.template, "pooling": self.pooling, "activation": self.activation,
                                                  "bidirectional": self.bidirectional})


def _with_lora(lm: Any, lora: dict[str, Any], name: str, gradient_checkpointing: bool = False) -> Any:
    """`lm` with LoRA adapters on `lora["target_modules"]`: only the adapters train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LsrError("[model] lora needs peft: pip install 'lsr[lora]'") from None
    head = {n for n, m in lm.named_modules() if m is lm.get_output_embeddings()}
    if head & set(lora["target_modules"]) or any(t in ("lm_head", "embed_out") for t in lora["target_modules"]):
        raise LsrError(f"{name}: [model] lora target_modules must not include the LM head (it runs in the fused kernel)")
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), bias="none")  # fmt: skip
    try:
        model = get_peft_model(lm, config)
    except ValueError as err:  # target modules not found in the model
        raise LsrError(f"{name}: [model] lora: {err}") from None
    if gradient_checkpointing:  # the frozen embeddings' output must carry gradients
        model.enable_input_require_grads()
    return model


def build_model(kind: str, base: str | Path, idf_texts: Sequence[str] | None = None, query_base: str | Path | None = None,
                **kwargs: Any) -> torch.nn.Module:
    """`splade`, `inference-free` (query weights initialised from the idf of `idf_texts`),
    `asymmetric` (queries through `query_base`, default `base`) or `decoder` (a causal LM,
    echo input, optional LoRA)."""
    if kind == "splade":
        return SpladeModel(base, **kwargs)
    if kind == "decoder":
        return DecoderSpladeModel(base, **kwargs)
    if kind == "asymmetric":
        return AsymmetricSpladeModel(base, query_base, **kwargs)
    if kind == "inference-free":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base))
        size = len(tok)
        idf = corpus_idf(tok, list(idf_texts or []), size) if idf_texts else np.full(size, math.log(2.0), np.float32)
        return InferenceFreeModel(base, idf, **kwargs)
    raise LsrError(f"unknown model kind {kind!r}; expected one of {KINDS}")

"""SPLADE over a decoder-only (causal) LM, with "echo" input (Mistral-SPLADE style).

A causal LM's token at position s sees only the positions before it, so a term weight read
at the first copy of a text would ignore what follows. Echo feeds the text twice, through a
template with two `{text}` slots (default `"{text}\\n{text}"`, any prefix or separator
around them), and pools only over the second copy's positions, each of which has seen the
whole text. The base model (embeddings, layers, final norm) runs in torch up to the input of
the LM head (`lsr.encoders.splade.mlm_hidden`); the head's projection (tied or untied, with
or without bias) + ReLU + log1p + max runs in `lsr.kernels.splade_max`, so the
`[batch, seq, vocab]` logits never exist. Gemma-2/3's final logit soft-capping
(`cap·tanh(x/cap)`, monotone and 0 at 0) commutes with the max and is applied on `[B, V]`.

Padding may be on either side: position ids follow the attention mask, so a text's vectors do
not depend on where its batch's padding goes. Special tokens (BOS, and any inside a text) are
never pooled. `bidirectional=True` lets every token attend to the whole input (LLM2Vec /
Mistral-SPLADE): the model gets a prepared non-causal 4-D mask, which transformers passes to
the attention as is; a model whose attention ignores it (no attention layers, or a kernel that
takes no mask) is refused at load time by a two-token probe. CPU and CUDA both run; only the
CPU path is tested here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.encoders.base import Encoder, Progress
from lsr.encoders.postprocess import PostProcessing
from lsr.encoders.splade import _Done, check_head_options, cpu_count, default_device, mlm_hidden
from lsr.errors import LsrError
from lsr.sparse import SparseVectors

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{text}\n{text}"
PADDING_SIDES = ("right", "left")
# the saved training options of a decoder folder (template, pooling, activation)
SETTINGS_FILE = "lsr_decoder.json"


def template_parts(template: str) -> tuple[str, str, str]:
    """The literal text before, between and after the two `{text}` slots of `template`."""
    parts = template.split("{text}")
    if len(parts) != 3:
        raise LsrError(f"echo template {template!r}: expected exactly two {{text}} slots")
    return parts[0], parts[1], parts[2]


class EchoTokenizer:
    """Builds echo inputs: `[BOS] prefix text sep text suffix` token ids, and the pooling mask
    over the second `text` (its special tokens excluded). Each piece is tokenized on its own,
    so the two copies have the same tokens and the mask needs no character offsets."""

    def __init__(self, tokenizer: Any, template: str = DEFAULT_TEMPLATE, padding_side: str = "right") -> None:
        if padding_side not in PADDING_SIDES:
            raise LsrError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        self.tokenizer, self.template, self.padding_side = tokenizer, template, padding_side
        pieces = template_parts(template)
        prefix, sep, suffix = (tokenizer(p, add_special_tokens=False)["input_ids"] if p else [] for p in pieces)
        bos = tokenizer.bos_token_id
        # the tokenizer's own rule: Llama/Mistral/Gemma prepend BOS, GPT-2 and Qwen do not
        adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
        self.prefix = ([bos] if adds_bos else []) + list(prefix)
        self.sep, self.suffix = list(sep), list(suffix)
        self.fixed = len(self.prefix) + len(self.sep) + len(self.suffix)
        self.special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else int(pad)

    def text_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Each text's tokens, truncated so that the echoed input fits `max_length`."""
        room = (max_length - self.fixed) // 2
        if room < 1:
            raise LsrError(f"max_length {max_length} leaves no room for the text in template {self.template!r}")
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [x[:room] for x in ids]

    def batch(self, text_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(input_ids, attention_mask, pool_mask)` `[B, S]` arrays for the echoed texts."""
        rows = [(self.prefix + list(t) + self.sep, list(t), self.suffix) for t in text_ids]
        width = max(1, max(len(a) + len(b) + len(c) for a, b, c in rows))  # an empty text: one pad
        B = len(rows)
        input_ids = np.full((B, width), self.pad_id, dtype=np.int64)
        attention = np.zeros((B, width), dtype=np.int64)
        pool = np.zeros((B, width), dtype=bool)
        for i, (head, text, tail) in enumerate(rows):
            n = len(head) + len(text) + len(tail)
            start = width - n if self.padding_side == "left" else 0
            input_ids[i, start : start + n] = head + text + tail
            attention[i, start : start + n] = 1
            second = slice(start + len(head), start + len(head) + len(text))
            pool[i, second] = ~np.isin(np.asarray(text, dtype=np.int64), self.special)
        return input_ids, attention, pool

    def tensors(self, texts: Sequence[str], max_length: int, device: Any) -> tuple[dict[str, Any], Any]:
        """Model inputs (with position ids that skip left padding) and the pooling mask."""
        import torch

        ids, attention, pool = self.batch(self.text_ids(texts, max_length))
        return model_inputs(ids, attention, device), torch.from_numpy(pool).to(device)


def model_inputs(input_ids: np.ndarray, attention: np.ndarray, device: Any) -> dict[str, Any]:
    """input_ids, attention_mask and position ids counted over real tokens only (so left
    padding shifts nothing)."""
    import torch

    mask = torch.from_numpy(attention)
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    return {"input_ids": torch.from_numpy(input_ids).to(device), "attention_mask": mask.to(device),
            "position_ids": positions.to(device), "use_cache": False}  # fmt: skip


def bidirectional_inputs(inputs: dict[str, Any], model: Any) -> dict[str, Any]:
    """`inputs` (from `model_inputs`) with a non-causal `[B, 1, S, S]` attention mask: every
    position attends to every real token of its row (and to itself, so no row is empty).
    Boolean for SDPA and other kernels; additive (0 / dtype min) for eager attention, which
    adds the mask to its scores."""
    import torch

    keys = inputs["attention_mask"].bool()
    B, S = keys.shape
    allowed = keys[:, None, None, :] | torch.eye(S, dtype=torch.bool, device=keys.device)
    if getattr(model.config, "_attn_implementation", None) == "eager":
        dtype = model.dtype
        allowed = torch.zeros(allowed.shape, dtype=dtype, device=keys.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return {**inputs, "attention_mask": allowed}


def check_bidirectional(model: Any, name: str) -> None:
    """Raise an `LsrError` unless `model` attends both ways under `bidirectional_inputs`: the
    first position's hidden state must change when the token after it changes."""
    import torch

    ids = np.array([[1, 2], [1, 3]], dtype=np.int64) % model.get_output_embeddings().weight.shape[0]
    device = next(model.parameters()).device
    inputs = bidirectional_inputs(model_inputs(ids, np.ones_like(ids), device), model)
    training = model.training
    try:
        with torch.no_grad():
            hidden = mlm_hidden(model.eval(), model.get_output_embeddings(), inputs, name)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        logger.debug("bidirectional probe of %s failed: %s", name, err)
        hidden = None
    finally:
        model.train(training)
    if hidden is None or torch.equal(hidden[0, 0], hidden[1, 0]):
        raise LsrError(f"{name}: bidirectional attention is not available for {type(model).__name__} "
                       "(its attention does not take a non-causal mask); use bidirectional = false")  # fmt: skip


def decoder_weights(model: Any, hidden: Any, pool: Any, activation: str = "relu", pooling: str = "max") -> Any:
    """`[B, V]` SPLADE weights from the causal LM `model`'s final hidden states `[B, S, D]`
    through its LM head, over the positions in `pool` (differentiable)."""
    from lsr.kernels import splade_max

    head = model.get_output_embeddings()
    weights = splade_max(hidden, head.weight, getattr(head, "bias", None), pool, activation, pooling=pooling)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap and pooling == "max":
        import torch

        raw = torch.expm1(weights if activation == "relu" else torch.expm1(weights))
        capped = torch.log1p(cap * torch.tanh(raw / cap))
        weights = capped if activation == "relu" else torch.log1p(capped)
    elif cap:
        raise LsrError("sum pooling with final logit soft-capping is not supported; use max pooling")
    return weights


def is_causal_lm(config: dict[str, Any]) -> bool:
    """Whether a `config.json` describes a causal LM (`architectures` ending in ForCausalLM,
    or GPT-2's LMHeadModel)."""
    names = config.get("architectures") or [] if isinstance(config, dict) else []
    return any(str(n).endswith(("ForCausalLM", "LMHeadModel")) for n in names)


def load_causal_lm(name: str | Path, dtype: Any = None) -> tuple[Any, Any]:
    """`(tokenizer, model)` of a causal-LM folder or id; a LoRA adapter folder
    (`adapter_config.json`) is loaded onto its base and merged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        if (Path(name) / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32)
    except ImportError:
        raise LsrError(f"{name}: a LoRA adapter folder needs peft (pip install 'lsr[lora]')") from None
    except (OSError, ValueError, KeyError) as err:
        raise LsrError(f"cannot load a causal-LM model from {name}: {err}") from None
    if model.get_output_embeddings() is None:
        raise LsrError(f"{name}: the model has no LM head")
    return tokenizer, model


class DecoderSpladeEncoder(Encoder):
    """SPLADE over a causal LM (`AutoModelForCausalLM`) with echo input; see the module doc.

    `max_length` is the query truncation length of the echoed input (both copies and the
    template); documents take `encode_documents`' `max_length`. A forward pass takes at most
    `batch_size` texts and about `max_batch_tokens` padded tokens (texts sorted by length).
    `bidirectional` attends both ways (see the module doc; refused where the model cannot).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        pooling: str = "max",
        activation: str = "relu",
        max_length: int | None = None,
        padding_side: str = "right",
        postprocessing: PostProcessing | None = None,
        max_batch_tokens: int | None = None,
        bidirectional: bool = False,
    ) -> None:
        check_head_options(pooling, activation)
        import torch

        self.model_name = str(model)
        self.pooling, self.activation = pooling, activation
        self.postprocessing = postprocessing or PostProcessing()
        self.device = torch.device(device or default_device())
        self.max_batch_tokens = int(max_batch_tokens or (8192 if self.device.type == "cpu" else 1 << 30))
        if self.device.type == "cpu" and torch.get_num_threads() != cpu_count():
            torch.set_num_threads(cpu_count())
        self.tokenizer, self.model = load_causal_lm(self.model_name)
        self.model.eval().to(self.device)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional:
            check_bidirectional(self.model, self.model_name)
        self.echo = EchoTokenizer(self.tokenizer, template, padding_side)
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.model_max_length = int(limit)
        self.max_length = int(min(max_length or 128, self.model_max_length))
        V = self.model.get_output_embeddings().weight.shape[0]
        known = min(V, len(self.tokenizer))
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(known)))
        self.vocab = [t if t is not None else f"[unused_{i}]" for i, t in enumerate(tokens)]
        self.vocab += [f"[unused_{i}]" for i in range(known, V)]  # padded heads (Qwen: 151,936)

    # ---- spec ---------------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        model = self.model_name
        if Path(model).is_dir():
            model = str(Path(model).resolve())
        spec = {"type": "decoder", "model": model, "template": self.echo.template, "pooling": self.pooling,
                "activation": self.activation, "max_length": self.max_length, "padding_side": self.echo.padding_side,
                "bidirectional": self.bidirectional, "dim": self.dim}  # fmt: skip
        if self.postprocessing.active:
            spec["postprocessing"] = self.postprocessing.to_spec()
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None = None, device: str | None = None) -> "DecoderSpladeEncoder":
        """The model `spec["model"]` names with the spec's echo template and pooling."""
        return cls(
            spec["model"],
            device=device,
            template=spec.get("template", DEFAULT_TEMPLATE),
            pooling=spec.get("pooling", "max"),
            activation=spec.get("activation", "relu"),
            max_length=spec.get("max_length"),
            padding_side=spec.get("padding_side", "right"),
            bidirectional=bool(spec.get("bidirectional", False)),
            postprocessing=PostProcessing.from_spec(spec.get("postprocessing")),
        )

    # ---- encoding -----------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        return self.encode(texts, max_length=self.max_length, batch_size=32)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, progress: Progress | None = None
    ) -> SparseVectors:
        return self.encode(texts, max_length=max_length, batch_size=batch_size, progress=progress)

    def encode(
        self, texts: Sequence[str], max_length: int = 256, batch_size: int = 32, progress: Progress | None = None
    ) -> SparseVectors:
        """Encode texts (sorted by length, batched) into sparse vectors; `progress(texts_done)`
        is called after each batch."""
        import torch

        texts = list(texts)
        n = len(texts)
        if n == 0:
            return SparseVectors(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), self.dim)
        ids = self.echo.text_ids(texts, int(min(max_length, self.model_max_length)))
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        parts, done, start = [], _Done(progress), 0
        with torch.inference_mode():
            while start < n:
                width = 2 * int(lengths[order[start]]) + self.echo.fixed
                rows = order[start : start + max(1, min(batch_size, self.max_batch_tokens // width))]
                parts.append(self._encode_batch([ids[i] for i in rows]))
                done.add(len(rows))
                start += len(rows)
        vectors = SparseVectors.concatenate(parts, dim=self.dim)[np.argsort(order, kind="stable")]
        return self.postprocessing(vectors)

    def hidden_states(self, text_ids: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        """The LM head's input `[B, S, D]` for the echoed texts (token ids from
        `echo.text_ids`) and their pooling mask `[B, S]`."""
        import torch

        input_ids, attention, pool = self.echo.batch(text_ids)
        inputs = model_inputs(input_ids, attention, self.device)
        if self.bidirectional:
            inputs = bidirectional_inputs(inputs, self.model)
        hidden = mlm_hidden(self.model, self.model.get_output_embeddings(), inputs, self.model_name)
        return hidden, torch.from_numpy(pool).to(self.device)

    def _encode_batch(self, text_ids: list[list[int]]) -> SparseVectors:
        hidden, pool = self.hidden_states(text_ids)
        weights = decoder_weights(self.model, hidden, pool, self.activation, self.pooling)
        return SparseVectors.from_dense(weights.float().cpu())

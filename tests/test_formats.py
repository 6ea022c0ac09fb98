"""lsr.formats: the line reader and its FILE:LINE errors, each reader/writer round trip, the TREC
SGML parser and the atomic-directory writer."""

from __future__ import annotations

import errno
import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import LsrError, SparseVectors
from lsr.formats import BadLines, FormatError
from lsr.formats.atomic import NoSpaceError, atomic_directory
from lsr.formats.documents import CorpusReader, join_title
from lsr.formats.lines import json_records, read_json_lines, read_lines
from lsr.formats.qrels import load_qrels
from lsr.formats.queries import load_queries, load_topics
from lsr.formats.runs import load_run, write_trec_run
from lsr.formats.trec import sgml_blocks
from lsr.formats.vectors import (
    load_query_vectors,
    read_csr,
    read_json_vectors,
    read_seismic_bin,
    write_csr,
    write_json_vectors,
    write_seismic_bin,
)


def write(path: Path, data: str | bytes) -> Path:
    """`data` into `path`, gzipped when the name ends in .gz."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def vectors(seed: int = 0, n: int = 12, dim: int = 50) -> SparseVectors:
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((n, dim)) < 0.2, rng.random((n, dim)).astype(np.float32) + 0.1, 0).astype(np.float32)
    dense[3] = 0  # an empty row
    return SparseVectors.from_dense(dense)


# ---- the line reader -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_lines_numbered_blank_kept_or_skipped(tmp_path, name):
    path = write(tmp_path / name, "one\r\n\n  \nfour\n")
    assert list(read_lines(path, blank=True)) == [(1, "one"), (2, ""), (3, "  "), (4, "four")]
    assert list(read_lines(path)) == [(1, "one"), (4, "four")]


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_lines_not_utf8_names_file_and_line(tmp_path, name):
    path = write(tmp_path / name, b"fine\ncaf\xe9\nfine too\n")
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}:2: not valid UTF-8 text$"):
        list(read_lines(path))
    bad = BadLines(skip=True)
    assert list(read_lines(path, bad)) == [(1, "fine"), (3, "fine too")]
    assert bad.skipped == [f"{path}:2: not valid UTF-8 text"]


def test_lines_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(LsrError, match=rf"^{re.escape(str(tmp_path / 'none.txt'))}: cannot open"):
        list(read_lines(tmp_path / "none.txt"))
    corrupt = tmp_path / "c.txt.gz"
    corrupt.write_bytes(gzip.compress(b"".join(b"line %d with some text\n" % i for i in range(5000)))[:3000])
    with pytest.raises(FormatError, match=rf"^{re.escape(str(corrupt))}: cannot read"):
        list(read_lines(corrupt))


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_json_records_and_their_errors(tmp_path, name):
    path = write(tmp_path / name, '{"a": 1}\n\n{"b": oops}\n[1, 2]\n{"c": "a\x01b"}\n{"d": 4}\n')
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}:3: invalid JSON \(Expecting value at column 7\)$"):
        list(read_json_lines(path))
    bad = BadLines(skip=True)
    assert list(read_json_lines(path, bad)) == [(1, {"a": 1}), (6, {"d": 4})]
    assert [m[len(str(path)) :] for m in bad.skipped] == [
        ":3: invalid JSON (Expecting value at column 7)",
        ":4: expected a JSON object",
        ":5: invalid JSON (Invalid control character at column 9)",
    ]
    assert issubclass(FormatError, LsrError)
    assert list(json_records([(7, '{"x": 1}'), (8, None)], "f")) == [(7, {"x": 1})]


# ---- documents, queries, qrels, runs ------------------------------------------------------


def test_join_title_is_the_indexed_text(tmp_path):
    assert join_title("T", "body") == "T body" and join_title("", "body") == "body"
    path = write(tmp_path / "c.jsonl", '{"_id": "1", "title": "T", "text": "body"}\n{"_id": "2", "text": "x"}\n')
    assert [d.full_text() for d in CorpusReader(path)] == ["T body", "x"]


@pytest.mark.parametrize("name", ["docs.trec", "docs.trec.gz"])
def test_trec_documents_inline_tags_and_markup(tmp_path, name):
    path = write(
        tmp_path / name,
        "<DOC><DOCNO>A-1</DOCNO><HEADLINE><P>The title</P></HEADLINE><TEXT>Some <b>bold</b> text</TEXT></DOC>\n"
        "<DOC>\n<DOCNO> A-2 </DOCNO>\n<DATE>1994</DATE>\nuntagged\n</DOC>\n",
    )
    docs = [(d.doc_id, d.title, d.text, d.where) for d in CorpusReader(path)]
    assert docs == [("A-1", "The title", "Some bold text", f"{path}:1"), ("A-2", "", "1994 untagged", f"{path}:2")]


def test_sgml_blocks_errors_are_reported_and_reading_goes_on():
    lines = enumerate(["<DOC>", "<DOCNO>1</DOCNO>", "<DOC>", "<DOCNO>2</DOCNO>", "</DOC>", "</DOC>", "<DOC>"], 1)
    bad = BadLines(skip=True)
    blocks = list(sgml_blocks(lines, "f", bad, blocks=("doc",)))
    assert [(b.line, b.end, b.text(["docno"])) for b in blocks] == [(3, 5, "2")]
    assert bad.skipped == [
        "f:3: <DOC> opened inside the <DOC> begun at line 1 (missing </DOC>?)",
        "f:6: </DOC> without a matching opening tag",
        "f:7: <DOC> is never closed",
    ]


def test_topics_fields_left_open(tmp_path):
    """TREC topics leave <num>, <title>, <desc> open: each lasts to the next field tag."""
    path = write(tmp_path / "t.txt.gz", "<top>\n<num> Number: 7\n<title> Topic: a <i>b</i>\n<desc> not this\n</top>\n")
    assert load_topics(path) == {"7": "a b"} == load_queries(path)
    with pytest.raises(FormatError, match=r"t2.txt:1: text outside a <top> block: 'stray'"):
        load_topics(write(tmp_path / "t2.txt", "stray <top> <num> 1 </num> x </top>\n"))


@pytest.mark.parametrize("name", ["run.txt", "run.txt.gz"])
def test_trec_run_round_trip(tmp_path, name):
    run = {"q1": [("d3", 2.5), ("d1", np.float32(1 / 3).item())], "q2": [("d2", -1.0)]}
    plain = tmp_path / "run.txt"
    write_trec_run(plain, run, "tag")
    assert plain.read_text().splitlines()[0] == "q1 Q0 d3 1 2.5 tag"
    path = write(tmp_path / name, plain.read_bytes())
    back = load_run(path)
    assert {q: list(h) for q, h in back.items()} == {q: [d for d, _ in hits] for q, hits in run.items()}
    for q, hits in run.items():  # 9 significant digits give every float32 score back exactly
        assert [np.float32(back[q][d]) for d, _ in hits] == [np.float32(s) for _, s in hits]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", ["q.tsv", "q.tsv.gz"])
def test_qrels_and_queries_gz_or_plain(tmp_path, name):
    assert load_qrels(write(tmp_path / f"qrels-{name}", "1 0 d1 1\n1 0 d2 0.0\n")) == {"1": {"d1": 1, "d2": 0}}
    assert load_queries(write(tmp_path / name, "1\tfirst query\n2\tsecond\n")) == {"1": "first query", "2": "second"}
    bad = write(tmp_path / f"bad-{name}", "1 0 d1 1\n1 0 d2 x\n")
    with pytest.raises(FormatError, match=rf"^{re.escape(str(bad))}:2: the relevance label must be a whole number"):
        load_qrels(bad)


# ---- vector collections --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_json_vectors_round_trip(tmp_path, name):
    """Written with contents, read back as vectors (known vocabulary) and as query rows."""
    v, plain = vectors(), tmp_path / "written.jsonl"
    vocab, ids = [f"t{i}" for i in range(v.dim)], [f"d{i}" for i in range(len(v))]
    write_json_vectors(plain, v, ids, vocab, contents=[f"text {i}" for i in range(len(v))])
    path = write(tmp_path / name, plain.read_bytes())
    assert read_json_vectors(path, dict(zip(vocab, range(v.dim)))) == (ids, v, vocab)
    assert load_query_vectors(path) == (ids, v.to_dicts(vocab))


def test_json_vectors_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "v.jsonl.gz", '{"id": "a", "vector": {"x": 1}}\n\n{"id": "b", "vector": {"zz": 1}}\n')
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}:3: token 'zz' is not in the vocabulary$"):
        load_query_vectors(path, {"x": 0})
    bad = write(tmp_path / "w.jsonl", '{"vector": {"x": 1}}\n')
    with pytest.raises(FormatError, match=rf"^{re.escape(str(bad))}:1: the record has no '_id' or 'id' field$"):
        read_json_vectors(bad)


@pytest.mark.parametrize("kind", ["seismic", "csr"])
def test_binary_vectors_round_trip_and_errors(tmp_path, kind):
    v = vectors(seed=1)
    path = tmp_path / f"v.{kind}"
    (write_seismic_bin if kind == "seismic" else write_csr)(path, v)
    back = read_seismic_bin(path, dim=v.dim) if kind == "seismic" else read_csr(path)
    assert back == v
    path.write_bytes(path.read_bytes()[:-4])  # truncated
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}: not a"):
        read_seismic_bin(path) if kind == "seismic" else read_csr(path)


def test_formats_import_without_torch_or_numba():
    """lsr.formats is NumPy only at import (the Seismic reader imports Numba when called), and
    lsr.indexer, which writes through it, stays torch-free."""
    code = (
        "import sys, lsr.formats.vectors, lsr.formats.documents, lsr.formats.queries, lsr.formats.qrels, "
        "lsr.formats.runs, lsr.formats.atomic; a = {'torch', 'numba'} & set(sys.modules); "
        "import lsr.indexer; b = 'torch' in sys.modules; print(sorted(a), b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


# ---- the atomic-directory writer ------------------------------------------------------------


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a").write_text("first")
    assert (target / "a").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("second")
            raise RuntimeError("interrupted")
    assert (target / "a").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left


def test_atomic_directory_refusal_and_full_disk(tmp_path):
    def refuse(path: Path) -> None:
        if path.exists():
            raise LsrError(f"{path} is not ours")

    (tmp_path / "mine").mkdir()
    with pytest.raises(LsrError, match="mine is not ours"):
        with atomic_directory(tmp_path / "mine", refuse):
            raise AssertionError("the refusal comes before the block runs")
    with pytest.raises(NoSpaceError, match=r"^no space left on .* \(needed ~3 MB\)$"):
        with atomic_directory(tmp_path / "full", expected_bytes=3 * 2**20):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_lucene_export_refuses_a_folder_it_did_not_write(tmp_path):
    from lsr.eval.lucene import COMPLETE, _check_target

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(LsrError, match="is not an lsr Lucene index"):
        _check_target(user)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / COMPLETE).write_text("")
    _check_target(ours)  # an lsr-written folder, or none, is replaced without a word
    _check_target(tmp_path / "missing")

import gzip
import json
import os

import pytest

from lsr.corpus import CorpusReader
from lsr.errors import LsrError


def read(path, **kw):
    reader = CorpusReader(path, **kw)
    return reader, [(d.doc_id, d.title, d.text) for d in reader]


def test_folder_tree_of_text_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("first doc")
    (tmp_path / "b.md").write_text("# Title\nsecond")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("not indexed")
    reader, docs = read(tmp_path)
    assert docs == [("a/one.txt", "", "first doc"), ("b.md", "", "# Title\nsecond"), ("empty.txt", "", "")]
    assert [p.name for p in reader.ignored_files] == ["image.png"]
    assert reader.bytes_read == reader.bytes_total


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_fields(tmp_path, gz):
    lines = [
        {"_id": "1", "title": "T", "text": "body"},
        {"id": 2, "contents": "c"},
        {"docid": "x", "text": ""},
        {"_id": "t-only", "title": "just a title"},
    ]
    data = "\n".join(json.dumps(r) for r in lines) + "\n\n"
    path = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
    path.write_bytes(gzip.compress(data.encode()) if gz else data.encode())
    _, docs = read(path)
    assert docs == [("1", "T", "body"), ("2", "", "c"), ("x", "", ""), ("t-only", "just a title", "")]


def test_beir_folder_reads_only_the_corpus(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "doc"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    _, docs = read(tmp_path)
    assert docs == [("d1", "", "doc")]


@pytest.mark.parametrize("marks", [("qrels",), ("queries.jsonl",), ("qrels", "queries.jsonl")])
def test_beir_folder_without_its_corpus_is_an_error(tmp_path, marks):
    """Its judgments (qrels/test.tsv) or queries were indexed as documents."""
    if "qrels" in marks:
        (tmp_path / "qrels").mkdir()
        (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    if "queries.jsonl" in marks:
        (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    with pytest.raises(LsrError) as raised:
        CorpusReader(tmp_path)
    assert str(raised.value) == f"{tmp_path}: a BEIR dataset folder (it has {' and '.join(marks)}) without its corpus.jsonl"


def test_real_scifact_is_read_whole(data_dir):
    reader, docs = read(data_dir / "scifact")
    assert len(docs) == 5183 and len({d[0] for d in docs}) == 5183
    assert all(isinstance(d[1], str) for d in docs)


def test_tsv_with_and_without_header(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tsecond\n")
    _, docs = read(tmp_path / "collection.tsv")
    assert docs == [("0", "", "first passage"), ("1", "", "second")]
    (tmp_path / "h.tsv").write_text("id\ttext\n7\tseven\n")
    _, docs = read(tmp_path / "h.tsv")
    assert docs == [("7", "", "seven")]


# a SMART file as CISI.ALL / CACM's cacm.all write them: .I opens a record, .T/.A/.W/.X fields
SMART_DOCS = """.I 1
.T
18 Editions of the Dewey Decimal Classifications
.A
Comaromi, J.P.
.W
   The present study is a history of the DEWEY Decimal
Classification.
.X
1	5	1
.I 002
.T
Use Made of Technical Libraries
.W
.NET readers and libraries.
"""


@pytest.mark.parametrize("name", ["CISI.ALL", "cran.all.1400", "collection"])
def test_smart_documents(tmp_path, name):
    """Titles from .T, texts from .W, other fields (.A, .X) left out; ids without leading zeros."""
    (tmp_path / name).write_text(SMART_DOCS)
    _, docs = read(tmp_path / name)
    assert docs == [
        ("1", "18 Editions of the Dewey Decimal Classifications", "The present study is a history of the DEWEY Decimal Classification."),
        ("2", "Use Made of Technical Libraries", ".NET readers and libraries."),
    ]
    reader = CorpusReader(tmp_path / name)
    assert reader.files[0][0].name == name and reader.bytes_total > 0


def test_smart_folder_indexes_only_the_documents(tmp_path):
    """A CISI folder: CISI.ALL is the corpus; its queries (.QRY) and judgments (.REL) are not."""
    (tmp_path / "CISI.ALL").write_text(SMART_DOCS)
    (tmp_path / "CISI.QRY").write_text(".I 1\n.W\nWhat problems arise?\n")
    (tmp_path / "CISI.REL").write_text("     1     2 0 0.000000\n")
    reader, docs = read(tmp_path)
    assert [d[0] for d in docs] == ["1", "2"]
    assert sorted(p.name for p in reader.ignored_files) == ["CISI.QRY", "CISI.REL"]


def test_docs_tsv_files(tmp_path):
    (tmp_path / "collection.docs").write_text("d1\tfirst passage\nd2\tA title\tsecond\n")
    _, docs = read(tmp_path)
    assert docs == [("d1", "", "first passage"), ("d2", "A title", "second")]


def test_trec_documents(tmp_path):
    path = tmp_path / "docs.trec"
    path.write_text(
        "<DOC>\n<DOCNO> FT-1 </DOCNO>\n<HEADLINE>A title</HEADLINE>\n<TEXT>\nSome <b>text</b>\nhere\n</TEXT>\n</DOC>\n"
        "<DOC>\n<DOCNO>FT-2</DOCNO>\n<TEXT></TEXT>\n</DOC>\n"
    )
    _, docs = read(path)
    assert docs == [("FT-1", "A title", "Some text here"), ("FT-2", "", "")]
    # sniffed in a folder even without a TREC suffix
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "fr940104").write_bytes(path.read_bytes())
    _, docs = read(tmp_path / "sub")
    assert [d[0] for d in docs] == ["FT-1", "FT-2"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("c.jsonl", '{"_id": "1", "text": "ok"}\n{"_id": "2", "text": oops}\n', r"c.jsonl:2: invalid JSON"),
        ("c.jsonl", '{"_id": "1", "text": "ok"}\n{"text": "no id"}\n', r"c.jsonl:2: no document id"),
        ("c.jsonl", '{"_id": "1", "text": "a\x01b"}\n', r"c.jsonl:1: invalid JSON \(Invalid control character at column 24\)$"),
        ("c.jsonl", '{"_id": "1"}\n', r"c.jsonl:1: no text"),
        ("c.jsonl", "[1, 2]\n", r"c.jsonl:1: expected a JSON object"),
        ("c.tsv", "1\tok\nno tab here\n", r"c.tsv:2: expected 'id<TAB>text'"),
        ("d.trec", "<DOC>\n<TEXT>x</TEXT>\n</DOC>\n", r"d.trec:1: <DOC> without <DOCNO>"),
        ("d.trec", "<DOC>\n<DOCNO>1</DOCNO>\n", r"d.trec:1: <DOC> is never closed"),
        ("C.ALL", ".I 1\n.W\nok\n.I\n.W\nno id\n", r"C.ALL:4: expected '.I ID'"),
        ("C.ALL", ".I 1\n.W\nok\n.I 2\nno field marker\n", r"C.ALL:5: text before the first field marker"),
        ("C.ALL", "stray text\n.I 1\n.W\nok\n", r"C.ALL:1: expected '.I ID' to open a SMART record"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LsrError, match=message):
        read(path)
    reader, docs = read(path, skip_bad=True)
    assert len(reader.skipped) == 1 and reader.skipped[0].startswith(str(path))
    assert all(d[0] for d in docs)


def test_invalid_utf8_and_corrupt_gzip(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "\xff\xfe"}\n')
    with pytest.raises(LsrError, match=r"bad.jsonl:2: not valid UTF-8"):
        read(bad)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    lines = "".join(f'{{"_id": "{i}", "text": "{os.urandom(16).hex()}"}}\n' for i in range(2000))
    corrupt.write_bytes(gzip.compress(lines.encode())[:5000])
    with pytest.raises(LsrError, match=r"corrupt.jsonl.gz: cannot read"):
        read(corrupt)
    reader, docs = read(corrupt, skip_bad=True)
    assert len(reader.skipped) == 1


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(LsrError, match="no such file"):
        CorpusReader(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(LsrError, match="unknown corpus format"):
        CorpusReader(tmp_path / "x.bin")
    (tmp_path / "sub").mkdir()
    with pytest.raises(LsrError, match="no documents found"):
        CorpusReader(tmp_path / "sub")

"""Growing an index directory (`Retriever.append` / `delete` / `merge`, `lsr index --append`,
`lsr delete`, `lsr merge`, `lsr search --where`) with the real splade-tiny model: the grown
index answers as an index built afresh over the same documents."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import LsrError

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "splade-tiny"
LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")
TEXTS = [
    "green tea brewed at eighty degrees", "espresso is coffee brewed under pressure", "hot cocoa with milk",
    "black tea with lemon and honey", "coffee beans roasted dark", "herbal tea helps sleep",
    "iced coffee in the summer", "matcha is powdered green tea", "milk foam on a cappuccino", "chamomile tea at night",
]  # fmt: skip
QUERIES = ["green tea", "coffee", "milk", "sleep at night"]


def records(ids):
    return [{"_id": f"d{i}", "text": TEXTS[i], "year": 2015 + i, "source": "a" if i % 2 else "b"} for i in ids]


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def encoder():
    from lsr.encoders import load_encoder

    return load_encoder(str(MODEL))


def answers(retriever):
    ids, scores = retriever.search_batch(QUERIES, k=6, threads=1)
    return ids, scores


def test_append_and_delete_answer_as_a_fresh_build(tmp_path, encoder):
    from lsr.retriever import Retriever

    first = write(tmp_path / "first.jsonl", records(range(6)))
    replacement = {"_id": "d2", "text": "a cold milk shake", "year": 2030, "source": "a"}
    more = write(tmp_path / "more.jsonl", records(range(6, 10)) + [replacement])
    grown = Retriever.build(first, model=encoder, path=tmp_path / "ix", keep_fields=["year", "source"])
    before = answers(grown)
    grown = grown.append(more)
    assert grown.last_build.n_docs == 5 and grown.last_build.replaced == 1 and len(grown) == 10
    grown = grown.delete(["d4", "d7"])
    assert len(grown) == 8 and grown.manifest["index_kind"] == "segmented"

    final = [r for r in records(range(10)) if r["_id"] not in ("d2", "d4", "d7")] + [replacement]
    fresh = Retriever.build(write(tmp_path / "final.jsonl", final), model=encoder, path=tmp_path / "fresh",
                            keep_fields=["year", "source"])  # fmt: skip
    for got, want in ((answers(grown), answers(fresh)), (answers(Retriever.load(tmp_path / "ix")), answers(fresh))):
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    hits = grown.search("milk shake", k=1)
    assert hits[0].doc_id == "d2" and hits[0].text == "a cold milk shake"  # the store follows the rows
    assert {h.doc_id for h in grown.search("tea", k=10, filter="year>=2020")} <= {"d2", "d5", "d6", "d8", "d9"}
    assert [h.doc_id for h in grown.search("tea", k=10, filter="year>=2020")] == [
        h.doc_id for h in fresh.search("tea", k=10, filter="year>=2020")
    ]
    merged = grown.merge()
    assert len(merged.index.segments) == 1 and answers(merged)[0] == answers(fresh)[0]
    assert before[0] != answers(merged)[0]
    with pytest.raises(LsrError, match="no document 'd4' in the index; nothing deleted"):
        merged.delete(["d3", "d4"])
    assert len(Retriever.load(tmp_path / "ix")) == 8


def test_append_writes_only_the_new_documents_and_merge_compacts_the_store(tmp_path, encoder, monkeypatch):
    import os

    import lsr.indexer.storage as storage
    from lsr.retriever import Retriever

    built = Retriever.build(write(tmp_path / "a.jsonl", records(range(4))), model=encoder, path=tmp_path / "ix")
    old_root, old_manifest = built._generation.root if built._generation else built.path, built.manifest
    inode = os.stat(old_root / "docs" / "texts.npy").st_ino
    hashed = []
    real_sha256 = storage._sha256
    monkeypatch.setattr(storage, "_sha256", lambda p: hashed.append(Path(p)) or real_sha256(p))
    grown = built.append(write(tmp_path / "b.jsonl", records(range(4, 7))))
    grown = grown.append(write(tmp_path / "c.jsonl", records(range(7, 9))))
    root = grown._generation.root if grown._generation else grown.path
    assert grown.docs.n_parts == 3 and (root / "docs" / "more-2" / "ids.npy").is_file()
    assert os.stat(root / "docs" / "texts.npy").st_ino == inode  # linked, not copied
    assert {p.parent.name for p in hashed if p.name == "texts.npy"} == {"more-1", "more-2"}  # part 0 not re-read
    assert grown.manifest["files"]["docs/texts.npy"] == old_manifest["files"]["docs/texts.npy"]
    storage.read_manifest(root, verify=True)  # the reused entries are right
    want = [(grown.docs.doc_id(r), grown.docs.title(r), grown.docs.text(r)) for r in range(len(grown.docs))]
    assert [w[0] for w in want] == [f"d{i}" for i in range(9)] and want[8][2] == TEXTS[8]
    assert list(grown.docs.all_ids()) == [w[0] for w in want]
    merged = Retriever.load(tmp_path / "ix").delete(["d5"]).merge()
    assert merged.docs.n_parts == 1
    assert [(merged.docs.doc_id(r), merged.docs.title(r), merged.docs.text(r)) for r in range(len(merged.docs))] == want
    assert [h.doc_id for h in merged.search("coffee", k=10)] == [h.doc_id for h in grown.search("coffee", k=10) if h.doc_id != "d5"]


def test_a_failed_append_leaves_the_index_as_it_was(tmp_path, encoder, monkeypatch):
    from lsr.indexer.segmented import SegmentedIndex
    from lsr.retriever import Retriever

    built = Retriever.build(write(tmp_path / "a.jsonl", records(range(4))), model=encoder, path=tmp_path / "ix")
    want = answers(built)

    def disk_full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SegmentedIndex, "save", disk_full)
    with pytest.raises(LsrError, match="no space left"):
        built.append(write(tmp_path / "b.jsonl", records(range(4, 8))))
    again = Retriever.load(tmp_path / "ix")
    assert len(again) == 4 and answers(again)[0] == want[0]
    assert not list(tmp_path.glob(".ix.tmp-*"))


def test_a_damaged_field_column_is_named_not_extended(tmp_path, encoder):
    from lsr.retriever import Retriever

    built = Retriever.build(write(tmp_path / "a.jsonl", records(range(4))), model=encoder, path=tmp_path / "ix", keep_fields=["year"])
    column = next((tmp_path / "ix").rglob("fields/year.json"))
    column.write_text("[2015, 2016]")  # two values for four documents
    with pytest.raises(LsrError, match=r"year\.json: not a list of 4 values \(index is damaged"):
        built.append(write(tmp_path / "b.jsonl", records(range(4, 6))))
    with pytest.raises(LsrError, match="index is damaged"):
        Retriever.load(tmp_path / "ix").search("tea", filter="year>2016")


def test_a_bm25_index_cannot_grow(tmp_path):
    from lsr.retriever import Retriever

    built = Retriever.build(write(tmp_path / "a.jsonl", records(range(4))), model="bm25", path=tmp_path / "ix")
    with pytest.raises(LsrError, match="bm25 index cannot grow"):
        built.append(write(tmp_path / "b.jsonl", records(range(4, 6))))
    assert len(built.delete(["d1"])) == 3  # deleting needs no statistics


def lsr(*args, cwd):
    assert LSR, "the lsr console script is not installed"
    return subprocess.run([LSR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_append_delete_merge_and_where(tmp_path):
    write(tmp_path / "a.jsonl", records(range(6)))
    write(tmp_path / "b.jsonl", records(range(6, 10)) + [{"_id": "d1", "text": "decaf coffee", "year": 2040}])
    (tmp_path / "gone.txt").write_text("d0\n\nd9\n")
    result = lsr("index", "a.jsonl", "-m", MODEL, "--keep-fields", "year,source", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = lsr("index", "b.jsonl", "--append", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "added 5 documents, 1 of them replacing documents with the same id" in result.stdout
    assert "(10 documents, " in result.stdout
    result = lsr("delete", "d3", "--file", "gone.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "deleted 3 documents" in result.stdout and "(7 left" in result.stdout

    result = lsr("search", "coffee", "-k", "10", "--json", cwd=tmp_path)
    hits = json.loads(result.stdout)
    ids = [h["doc_id"] for h in hits]
    assert not {"d0", "d3", "d9"} & set(ids) and ids.count("d1") == 1
    assert next(h for h in hits if h["doc_id"] == "d1")["text"] == "decaf coffee"
    result = lsr("search", "coffee", "-k", "10", "--json", "--where", "year>=2020 and source=b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {h["doc_id"] for h in json.loads(result.stdout)} <= {"d6", "d8"}

    result = lsr("info", cwd=tmp_path)
    assert "documents  7 (4 deleted" in result.stdout and "segmented index" in result.stdout
    result = lsr("merge", cwd=tmp_path)
    assert result.returncode == 0 and "7 documents in 1 segment(s)" in result.stdout
    assert [h["doc_id"] for h in json.loads(lsr("search", "coffee", "-k", "10", "--json", cwd=tmp_path).stdout)] == ids

    for args, message in (
        (("search", "tea", "--where", "year>>1"), "error: --where 'year>>1': expected a number or a string after '>' at column 6"),
        (("delete", "nope"), "no document 'nope' in the index; nothing deleted"),
        (("delete",), "no document ids given"),
        (("index", "b.jsonl", "--append", "-m", "bm25"), "--append adds to the index with its own encoder"),
    ):
        result = lsr(*args, cwd=tmp_path)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr

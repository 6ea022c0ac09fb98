"""Documents: a corpus path in, `Document`s out, streamed (never the whole corpus in memory).

Formats: a folder tree of `.txt`/`.md` files (id = relative path), JSON lines
(`.jsonl`/`.jsonl.gz`: `_id`/`id`/`docid`, optional `title`, `text`/`contents`), a BEIR
folder (its `corpus.jsonl`; a folder with `qrels/` or `queries.jsonl` but no corpus is an
error), `id<TAB>text` TSV (`.tsv`, `.docs`; MS MARCO `collection.tsv`), TREC `<DOC><DOCNO>`
files, and SMART files (`.ALL`, or any file starting `.I ID`: see `lsr.formats.smart`). A bad record
stops reading with one line naming file and line, unless `skip_bad=True`, which records it in
`skipped` and goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from lsr.errors import LsrError
from lsr.formats.lines import READ_ERRORS, BadLines, LineFile, first_field, json_records
from lsr.formats.smart import looks_like_smart, read_smart
from lsr.formats.trec import sgml_blocks

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
TSV_SUFFIXES = {".tsv", ".docs"}
SMART_SUFFIXES = {".all"}  # CISI.ALL, MED.ALL, cacm.all, cran.all.1400
TREC_SUFFIXES = {".trec", ".sgml", ".sgm"}
ID_KEYS = ("_id", "id", "docid")
TEXT_KEYS = ("text", "contents")
TSV_HEADERS = {"id", "_id", "docid", "pid", "doc_id"}
BEIR_MARKS = ("qrels", "queries.jsonl", "queries.jsonl.gz")  # what makes a folder a BEIR dataset


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    where: str  # "file:line", for error messages
    record: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # a JSONL line's whole object (lsr.fields)

    def full_text(self) -> str:
        """Title and text as one string (BEIR's convention for indexing)."""
        return join_title(self.title, self.text)


def join_title(title: str, text: str) -> str:
    """The one title + text join: what is indexed (and what BM25 baselines index) for a document."""
    return f"{title} {text}" if title else text


class CorpusReader:
    """Iterate over the documents under `path` (a file or a folder), in a stable order.

    `bytes_total` and `bytes_read` give progress (compressed bytes for `.gz`), `skipped`
    lists what `skip_bad=True` passed over, `ignored_files` the files of unknown type.
    """

    def __init__(self, path: str | Path, skip_bad: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise LsrError(f"{self.path}: no such file or folder")
        self.skip_bad = skip_bad
        self._bad = BadLines(skip_bad)
        self.skipped = self._bad.skipped
        self.ignored_files: list[Path] = []
        self.files = self._list_files()
        self.bytes_total = sum(f.stat().st_size for f, _ in self.files)
        self.bytes_read = 0

    def _list_files(self) -> list[tuple[Path, Callable]]:
        if self.path.is_file():
            kind = _kind(self.path, single=True)
            if kind is None:
                raise LsrError(f"{self.path}: unknown corpus format (expected .jsonl, .tsv, .docs, .txt, .md, TREC <DOC> or SMART .I)")
            return [(self.path, kind)]
        beir = self.path / "corpus.jsonl"
        if beir.is_file() or (self.path / "corpus.jsonl.gz").is_file():
            beir = beir if beir.is_file() else self.path / "corpus.jsonl.gz"
            return [(beir, _read_jsonl)]
        marks = [name for name in BEIR_MARKS if (self.path / name).exists()]
        if marks:  # never index a BEIR dataset's queries or judgments as its documents
            raise LsrError(f"{self.path}: a BEIR dataset folder (it has {' and '.join(marks)}) without its corpus.jsonl")
        files = []

        def unreadable(err: OSError) -> None:  # a folder os.walk cannot list: like an unreadable file
            self._bad(f"{err.filename}: cannot read folder ({err.strerror or err})")

        for root, dirs, names in os.walk(self.path, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                file = Path(root) / name
                kind = _kind(file, single=False)
                if kind is None:
                    self.ignored_files.append(file)
                else:
                    files.append((file, kind))
        files.sort(key=lambda item: item[0].relative_to(self.path).as_posix())
        if not files:
            raise LsrError(f"{self.path}: no documents found (.txt, .md, .jsonl, .tsv, .docs, TREC or SMART .ALL files)")
        return files

    def __iter__(self) -> Iterator[Document]:
        self.bytes_read = 0
        done = 0
        for file, read in self.files:
            size = file.stat().st_size
            try:
                with LineFile(file) as raw:
                    for doc in read(file, raw, self):
                        self.bytes_read = done + raw.position()
                        yield doc
            except READ_ERRORS as err:
                self._bad(f"{file}: cannot read ({getattr(err, 'strerror', None) or err})")
            done += size
            self.bytes_read = done

    def relative_id(self, file: Path) -> str:
        base = self.path if self.path.is_dir() else self.path.parent
        return file.relative_to(base).as_posix()


def _kind(file: Path, single: bool) -> Callable | None:
    suffixes = [s.lower() for s in file.suffixes[-2:]]
    last = suffixes[-1] if suffixes else ""
    if last == ".gz" and len(suffixes) == 2:
        last = suffixes[0]
    if last in JSONL_SUFFIXES or (single and last == ".json"):
        return _read_jsonl
    if last in TSV_SUFFIXES:
        return _read_tsv
    if last in TREC_SUFFIXES:
        return _read_trec
    if SMART_SUFFIXES & set(suffixes):
        return _read_smart
    if single or last in TEXT_SUFFIXES or last == "" or last == ".html":
        head = _head(file)
        if head.lstrip().upper().startswith("<DOC>"):
            return _read_trec
        if looks_like_smart(head):
            return _read_smart
        if last in TEXT_SUFFIXES:
            return _read_text_file
    return None


def _head(file: Path) -> str:
    """The first KiB of a file as text ('' when unreadable): enough to sniff its format."""
    try:
        with open(file, "rb") as f:
            return f.read(1024).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_jsonl(file: Path, raw: LineFile, reader: CorpusReader) -> Iterator[Document]:
    for number, record in json_records(raw.lines(reader._bad), file, reader._bad):
        doc_id = first_field(record, ID_KEYS)
        if doc_id is None:
            reader._bad(f"{file}:{number}: no document id (one of {', '.join(ID_KEYS)})")
            continue
        text = next((record[k] for k in TEXT_KEYS if k in record), None)
        title = record.get("title") or ""
        if text is None and "title" not in record:
            reader._bad(f"{file}:{number}: no text (one of {', '.join(TEXT_KEYS)})")
            continue
        if not isinstance(text or "", str) or not isinstance(title, str):
            reader._bad(f"{file}:{number}: text and title must be strings")
            continue
        yield Document(str(doc_id), title, text or "", f"{file}:{number}", record)


def _read_tsv(file: Path, raw: LineFile, reader: CorpusReader) -> Iterator[Document]:
    for number, line in raw.lines(reader._bad):
        if line is None:
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if number == 1 and fields[0].strip().lower() in TSV_HEADERS:
            continue  # a header row
        if len(fields) < 2 or not fields[0].strip():
            reader._bad(f"{file}:{number}: expected 'id<TAB>text' (or 'id<TAB>title<TAB>text')")
            continue
        if len(fields) == 2:
            yield Document(fields[0].strip(), "", fields[1], f"{file}:{number}")
        else:
            yield Document(fields[0].strip(), fields[1], "\t".join(fields[2:]), f"{file}:{number}")


TITLE_TAGS = ("title", "head", "headline")


def _read_trec(file: Path, raw: LineFile, reader: CorpusReader) -> Iterator[Document]:
    for block in sgml_blocks(raw.lines(reader._bad), file, reader._bad, blocks=("doc",)):
        docno = block.text(["docno"])
        if not docno:
            reader._bad(f"{file}:{block.line}: <DOC> without <DOCNO>")
            continue
        title = block.text(TITLE_TAGS)
        yield Document(docno, title, block.text(exclude=("docno", *TITLE_TAGS)), f"{file}:{block.line}")


def _read_smart(file: Path, raw: LineFile, reader: CorpusReader) -> Iterator[Document]:
    for record in read_smart(raw.lines(reader._bad), file, reader._bad):
        yield Document(record.id, record.title, record.text, f"{file}:{record.line}")


def _read_text_file(file: Path, raw: LineFile, reader: CorpusReader) -> Iterator[Document]:
    text = raw.read_text(reader._bad)
    if text is not None:
        yield Document(reader.relative_id(file), "", text, f"{file}:1")

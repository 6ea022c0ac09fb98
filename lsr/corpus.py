"""Streaming corpus readers: a path in, `Document`s out, never the whole corpus in memory.

Formats: a folder tree of `.txt`/`.md` files (id = relative path), JSON lines
(`.jsonl`/`.jsonl.gz`: `_id`/`id`/`docid`, optional `title`, `text`/`contents`), a BEIR
folder (its `corpus.jsonl`; a folder with `qrels/` or `queries.jsonl` but no corpus is an
error), `id<TAB>text` TSV (`.tsv`, `.docs`; MS MARCO `collection.tsv`), TREC `<DOC><DOCNO>`
files, and SMART files (`.ALL`, or any file starting `.I ID`: see `lsr.smart`). A bad record
stops reading with one line naming file and line, unless `skip_bad=True`, which records it in
`skipped` and goes on.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from lsr.errors import LsrError
from lsr.io import json_error
from lsr.smart import looks_like_smart, read_smart

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

    def full_text(self) -> str:
        """Title and text as one string (BEIR's convention for indexing)."""
        return f"{self.title} {self.text}" if self.title else self.text


class BadRecord(LsrError):
    """One record that cannot be read; fatal unless the reader skips bad records."""


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
        self.skipped: list[str] = []
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
                with _ProgressFile(file) as raw:
                    for doc in read(file, raw, self):
                        self.bytes_read = done + raw.position()
                        yield doc
            except (OSError, EOFError, zlib.error) as err:
                self._bad(f"{file}: cannot read ({getattr(err, 'strerror', None) or err})")
            done += size
            self.bytes_read = done

    def _bad(self, message: str) -> None:
        if not self.skip_bad:
            raise BadRecord(message)
        self.skipped.append(message)

    def relative_id(self, file: Path) -> str:
        base = self.path if self.path.is_dir() else self.path.parent
        return file.relative_to(base).as_posix()


class _ProgressFile:
    """A binary file whose raw position (compressed, for .gz) is the progress measure."""

    def __init__(self, path: Path) -> None:
        self.raw = open(path, "rb")
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw) if path.suffix == ".gz" else self.raw

    def position(self) -> int:
        return self.raw.tell()

    def lines(self) -> Iterator[tuple[int, str | None]]:
        """(line number, text) pairs; text is None for a line that is not UTF-8."""
        for number, line in enumerate(self.stream, 1):
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None

    def __enter__(self) -> "_ProgressFile":
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
        self.raw.close()


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


def _undecodable(file: Path, number: int) -> str:
    return f"{file}:{number}: not valid UTF-8 text"


def _read_jsonl(file: Path, raw: _ProgressFile, reader: CorpusReader) -> Iterator[Document]:
    for number, line in raw.lines():
        if line is None:
            reader._bad(_undecodable(file, number))
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            reader._bad(f"{file}:{number}: invalid JSON ({json_error(err)})")
            continue
        if not isinstance(record, dict):
            reader._bad(f"{file}:{number}: expected a JSON object")
            continue
        doc_id = next((record[k] for k in ID_KEYS if record.get(k) not in (None, "")), None)
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
        yield Document(str(doc_id), title, text or "", f"{file}:{number}")


def _read_tsv(file: Path, raw: _ProgressFile, reader: CorpusReader) -> Iterator[Document]:
    for number, line in raw.lines():
        if line is None:
            reader._bad(_undecodable(file, number))
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


_TAG = re.compile(r"<[^>]*>")
_DOCNO = re.compile(r"<DOCNO>\s*(.*?)\s*</DOCNO>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<(TITLE|HEAD|HEADLINE)>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _read_trec(file: Path, raw: _ProgressFile, reader: CorpusReader) -> Iterator[Document]:
    body: list[str] | None = None
    start = 0
    for number, line in raw.lines():
        if line is None:
            reader._bad(_undecodable(file, number))
            continue
        upper = line.strip().upper()
        if upper.startswith("<DOC>"):
            if body is not None:
                reader._bad(f"{file}:{start}: <DOC> not closed before line {number}")
            body, start = [], number
            continue
        if upper.startswith("</DOC>"):
            if body is None:
                reader._bad(f"{file}:{number}: </DOC> without <DOC>")
                continue
            doc = _trec_document("".join(body), file, start, reader)
            if doc is not None:
                yield doc
            body = None
            continue
        if body is not None:
            body.append(line)
    if body is not None:
        reader._bad(f"{file}:{start}: <DOC> not closed at end of file")


def _trec_document(body: str, file: Path, start: int, reader: CorpusReader) -> Document | None:
    docno = _DOCNO.search(body)
    if docno is None or not docno.group(1):
        reader._bad(f"{file}:{start}: <DOC> without <DOCNO>")
        return None
    rest = body[: docno.start()] + body[docno.end() :]
    title_match = _TITLE.search(rest)
    title = ""
    if title_match:
        title = _SPACE.sub(" ", _TAG.sub(" ", title_match.group(2))).strip()
        rest = rest[: title_match.start()] + rest[title_match.end() :]
    text = _SPACE.sub(" ", _TAG.sub(" ", rest)).strip()
    return Document(docno.group(1), title, text, f"{file}:{start}")


def _read_smart(file: Path, raw: _ProgressFile, reader: CorpusReader) -> Iterator[Document]:
    for record in read_smart(raw.lines(), file, reader._bad):
        yield Document(record.id, record.title, record.text, f"{file}:{record.line}")


def _read_text_file(file: Path, raw: _ProgressFile, reader: CorpusReader) -> Iterator[Document]:
    data = raw.stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        reader._bad(_undecodable(file, line))
        return
    yield Document(reader.relative_id(file), "", text, f"{file}:1")

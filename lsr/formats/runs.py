"""TREC runs: `qid Q0 docid rank score tag` per line, read and written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from lsr.formats.lines import FormatError, read_lines

Run = dict[str, dict[str, float]]


def load_run(path: str | Path) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`) as `{qid: {docid: score}}`.

    The rank column is ignored (trec_eval ranks by score); a document listed twice for the
    same query is an error, as in trec_eval.
    """
    run: Run = {}
    for line_no, line in read_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise FormatError(
                f"{path}:{line_no}: expected a run line 'qid Q0 docid rank score tag', "
                f"got {len(fields)} fields"
            )
        qid, _, docid, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise FormatError(f"{path}:{line_no}: the score must be a number, got {score!r}") from None
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise FormatError(f"{path}:{line_no}: document {docid!r} appears twice for query {qid!r}")
        hits[docid] = value
    return run


def trec_run_lines(run: dict[str, list[tuple[str, float]]], tag: str) -> Iterator[str]:
    """The lines of a TREC run (`qid Q0 doc rank score tag`), hits in rank order."""
    for qid, hits in run.items():
        for rank, (doc, score) in enumerate(hits, 1):
            yield f"{qid} Q0 {doc} {rank} {score:.9g} {tag}\n"


def write_trec_run(path: Path, run: dict[str, list[tuple[str, float]]], tag: str) -> None:
    """TREC run format, hits in rank order; written to a temporary file and renamed.

    Scores get 9 significant digits, enough to give back every float32 score exactly: scored
    again (trec_eval reads float32), the file ranks and ties as the in-memory run did."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(trec_run_lines(run, tag))
    os.replace(tmp, path)

"""Every file format lsr reads or writes, in one place (NumPy only: no torch, no Numba at import).

- `lines`: the one line reader (plain or `.gz`; numbered lines, JSON records) and the
  `FILE:LINE: what was expected` errors (`FormatError`), raised or collected (`BadLines`).
- `documents`: corpora (folders of text files, JSONL, TSV, TREC `<DOC>`, SMART, BEIR folders)
  as `Document`s; `join_title`, the one title + text join.
- `queries`: queries and topics (TSV, JSONL, TREC `<top>`, SMART) and pre-encoded query vectors.
- `qrels`, `runs`: relevance judgments and TREC runs (read and write).
- `vectors`: sparse vector collections (Anserini JsonVectorCollection, Seismic binary, BigANN `.csr`).
- `trec`, `smart`: the one TREC SGML parser and the SMART record parser.
- `atomic`: the one atomic-directory writer (indexes, eval caches, the Lucene export).
"""

from lsr.formats.lines import BadLines, FormatError

__all__ = ["BadLines", "FormatError"]

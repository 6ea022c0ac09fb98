"""Readers for evaluation data (qrels, runs, queries and topics, pre-encoded query vectors):
they live in `lsr.formats`; this module keeps the `lsr.eval` names.

Every reader streams its file line by line (`.gz` is read transparently) and reports a
malformed line as `FormatError("FILE:LINE: what was wrong")`, an `LsrError`.
"""

from lsr.formats.qrels import load_beir, load_qrels
from lsr.formats.queries import load_queries, load_queries_jsonl, load_queries_smart, load_queries_tsv, load_topics
from lsr.formats.runs import load_run
from lsr.formats.vectors import load_query_vectors

__all__ = [
    "load_qrels",
    "load_run",
    "load_queries",
    "load_queries_tsv",
    "load_queries_jsonl",
    "load_queries_smart",
    "load_topics",
    "load_query_vectors",
    "load_beir",
]

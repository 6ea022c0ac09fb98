"""Filtered search (`filter=`): exact search with a filter equals exact search over an index of
the allowed documents only; Seismic keeps its recall under a filter and answers a very
selective one exactly; `--where` predicates parse safely and fail in one clear line."""

import json

import numpy as np
import pytest

from builders import random_vectors

from lsr import LsrError
from lsr.fields import Column, WhereError, parse_field_names, parse_where, where_mask
from lsr.indexer import ExactIndex
from lsr.indexer.seismic import EXACT_FILTER_FRACTION, SeismicIndex
from lsr.indexer.sharded import ShardedIndex


def vectors(n, dim, density, seed):
    return random_vectors(n, dim, density, seed, offset=0.01)


DOCS = vectors(2000, 300, 0.03, 0)
QUERIES = vectors(30, 300, 0.04, 1)


def subset_answer(allowed_rows, k):
    """Exact top-k over an index of the allowed documents alone, mapped back to rows."""
    ids, scores = ExactIndex.build(DOCS[allowed_rows]).search(QUERIES, k, threads=1)
    pad = k - ids.shape[1]  # k is capped at the subset's size there, at the collection's here
    ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return np.where(ids >= 0, allowed_rows[np.maximum(ids, 0)], -1), scores


@pytest.mark.parametrize("share", [0.5, 0.1, 0.003])
@pytest.mark.parametrize("form", ["mask", "ids"])
def test_filtered_exact_equals_exact_over_the_subset(share, form):
    rng = np.random.default_rng(int(share * 1000))
    mask = rng.random(len(DOCS)) < share
    rows = np.flatnonzero(mask)
    want = subset_answer(rows, 10)
    index = ExactIndex.build(DOCS)
    filter = mask if form == "mask" else rng.permutation(rows)
    for threads in (1, 2):  # Numba batches
        got = index.search(QUERIES, 10, threads=threads, filter=filter)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    one = index.search(QUERIES[[3]], 10, filter=filter)  # one query: the NumPy path
    np.testing.assert_array_equal(one[0], want[0][[3]])
    np.testing.assert_array_equal(one[1], want[1][[3]])


def recall(got, want):
    return np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(got, want)])


def test_filtered_seismic_keeps_recall_and_never_leaves_the_filter():
    index = SeismicIndex.build(DOCS, n_postings=60, summary_energy=0.5, threads=1)
    rng = np.random.default_rng(1)
    mask = rng.random(len(DOCS)) < 0.3  # above EXACT_FILTER_FRACTION: filtered inside the kernel
    want = subset_answer(np.flatnonzero(mask), 10)
    knobs = dict(query_cut=8, heap_factor=0.8)
    got = index.search(QUERIES, 10, filter=mask, **knobs)
    assert mask[got[0][got[0] >= 0]].all()
    unfiltered = index.search(QUERIES, 10, **knobs)
    plain = recall(unfiltered[0], ExactIndex.build(DOCS).search(QUERIES, 10, threads=1)[0])
    assert recall(got[0], want[0]) >= plain - 0.05 and recall(got[0], want[0]) > 0.7
    parallel = index.search(QUERIES, 10, threads=2, filter=mask, **knobs)
    np.testing.assert_array_equal(parallel[0], got[0])


def test_a_very_selective_filter_returns_exactly_those_documents_ranked():
    """Five allowed documents (below EXACT_FILTER_FRACTION): exactly the ones that match the
    query, ranked as exact search ranks them, even with pruning that would miss them."""
    index = SeismicIndex.build(DOCS, n_postings=5, threads=1)  # heavy pruning
    allowed = np.array([7, 300, 999, 1500, 1999])
    assert len(allowed) <= EXACT_FILTER_FRACTION * len(DOCS)
    want = subset_answer(allowed, 5)
    got = index.search(QUERIES, 5, filter=allowed, query_cut=1, heap_factor=2.0)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=2e-3)  # float16 forward values
    dense = (QUERIES.to_scipy() @ DOCS.to_scipy()[allowed].T).toarray()
    assert ((got[0] >= 0).sum(1) == (dense > 0).sum(1)).all()


def test_sharded_index_cuts_the_filter_per_shard():
    mask = np.random.default_rng(2).random(len(DOCS)) < 0.2
    sharded = ShardedIndex([ExactIndex.build(DOCS[:700]), ExactIndex.build(DOCS[700:])])
    got = sharded.search(QUERIES, 10, threads=1, filter=mask)
    want = subset_answer(np.flatnonzero(mask), 10)
    np.testing.assert_array_equal(got[0], want[0])


def test_bad_filters_are_refused():
    index = ExactIndex.build(DOCS)
    with pytest.raises(ValueError, match="one entry per document"):
        index.search(QUERIES, 5, filter=np.ones(10, bool))
    with pytest.raises(ValueError, match=r"in \[0, 2000\)"):
        index.search(QUERIES, 5, filter=[5, 2000])


# ---- --where ------------------------------------------------------------------------------

COLUMNS = {
    "year": Column.of([2019, 2020, None, "unknown", 2021.5, 2024]),
    "source": Column.of(["pubmed", "arxiv", None, "pubmed", 3, "arxiv"]),
}


@pytest.mark.parametrize(
    "expression, rows",
    [
        ("year>=2020", [1, 4, 5]),
        ("year = 2019", [0]),
        ("year != 2020", [0, 4, 5]),  # missing and non-numbers never match
        ("source=pubmed", [0, 3]),
        ("source = 'arxiv' and year < 2022", [1]),
        ('source="pubmed" or year>2021', [0, 3, 4, 5]),
        ("year>=2020 and source=arxiv or source=pubmed", [0, 1, 3, 5]),  # and binds tighter
        ("year>=2020 and (source=arxiv or source=pubmed)", [1, 5]),
        ("YEAR>1 OR year<0", None),  # field names are case-sensitive: unknown field
        ("year >= -1e9 AND source != arxiv", [0]),  # row 4's source is a number: no string to compare
    ],
)
def test_where_predicates(expression, rows):
    if rows is None:
        with pytest.raises(WhereError, match="unknown field 'YEAR'"):
            where_mask(expression, COLUMNS)
        return
    assert np.flatnonzero(where_mask(expression, COLUMNS)).tolist() == rows


@pytest.mark.parametrize(
    "expression, message",
    [
        ("", "empty expression"),
        ("year>=", "expected a number or a string after '>=' at the end"),
        ("year 2020", "expected a comparison (= != < <= > >=) at column 6, found '2020'"),
        ("year>=2020 and", "expected a field name at the end"),
        ("(year=1", "expected ')' at the end"),
        ("year=1 xor year=2", "expected 'and', 'or' or the end at column 8, found 'xor'"),
        ("year=1; import os", "unexpected ';' at column 7"),
        ("__import__('os').system('x')", "unexpected '.' at column 17"),
        ('source="open', "unexpected '\"' at column 8"),
        ("colour=red", "unknown field 'colour' (kept fields: source, year)"),
        ("source>='a' and year='x'", None),  # year holds a string ('unknown'): allowed
    ],
)
def test_where_errors_are_one_line(expression, message):
    if message is None:
        where_mask(expression, COLUMNS)
        return
    with pytest.raises(WhereError) as err:
        where_mask(expression, COLUMNS)
    assert message in str(err.value) and "\n" not in str(err.value) and isinstance(err.value, LsrError)


def test_a_type_mismatch_names_the_field():
    with pytest.raises(WhereError, match="field 'kind' holds no numbers; compare it with a quoted string"):
        where_mask("kind > 3", {"kind": Column.of(["a", "b"])})
    assert parse_where("a=1 or b=2 and c=3").op == "or"


def test_keep_fields_names():
    assert parse_field_names(" year, metadata.source ,year") == ["year", "metadata.source"]
    with pytest.raises(LsrError, match="not a field name"):
        parse_field_names("year,bad name")


# ---- the Retriever: fields kept at indexing, filters by predicate, ids or mask ----------


def test_retriever_filters_by_predicate_ids_and_mask(tmp_path):
    from lsr.retriever import Retriever

    records = [
        {"_id": f"d{i}", "text": f"tea leaves number {i} brewed", "year": 2010 + i, "meta": {"src": "a" if i % 2 else "b"}}
        for i in range(12)
    ]
    records.append({"_id": "plain", "text": "tea without fields"})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = Retriever.build(corpus, model="bm25", path=tmp_path / "ix", keep_fields=["year", "meta.src"])
    assert r.manifest["fields"] == ["year", "meta.src"]
    hits = r.search("tea", k=20, filter="year>=2018 and meta.src=a")
    assert sorted(h.doc_id for h in hits) == ["d11", "d9"]
    assert [h.doc_id for h in r.search("tea", k=20, filter=["plain", "d3"])] == [h.doc_id for h in r.search("tea", k=20) if h.doc_id in ("plain", "d3")]
    mask = np.zeros(len(r), bool)
    mask[[0, 5]] = True
    ids, _ = r.search_batch(["tea", "brewed"], k=5, filter=mask)
    assert [sorted(x) for x in ids] == [["d0", "d5"], ["d0", "d5"]]
    with pytest.raises(LsrError, match="sparse search only"):
        r.search_rows(["tea"], 5, mode="dense", filter="year>1")
    with pytest.raises(WhereError, match="unknown field"):
        r.search("tea", filter="month=1")

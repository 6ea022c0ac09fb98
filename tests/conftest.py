"""Shared test set-up: offline, and the real collections in ../shared/data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"the shared data folder is missing: {DATA}"
    return DATA


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma omega".split()


def _make_beir(folder, n_docs=30, n_queries=6, split="train"):
    """A small BEIR folder: 30 random 8-word documents; query i (two words of document i)
    judges documents i and i + 10 relevant."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    docs = {f"d{i}": " ".join(rng.choice(WORDS, 8)) for i in range(n_docs)}
    with open(folder / "corpus.jsonl", "w") as f:
        for k, v in docs.items():
            f.write(json.dumps({"_id": k, "title": "", "text": v}) + "\n")
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:2]) for i in range(n_queries)}
    with open(folder / "queries.jsonl", "w") as f:
        for k, v in queries.items():
            f.write(json.dumps({"_id": k, "text": v}) + "\n")
    for name in {split, "test"}:
        with open(folder / "qrels" / f"{name}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for i in range(n_queries):
                f.write(f"q{i}\td{i}\t1\n")
                f.write(f"q{i}\td{i + 10}\t1\n")
    return folder, docs, queries


@pytest.fixture
def make_beir():
    return _make_beir

"""`lsr.indexer.precompile`: a Seismic build's kernels compile in a thread (`build_lists`) and a
child process (pruning, top components, search) at once; the child's kernels are loaded from
Numba's cache, never compiled again; a child that fails or hangs leaves the work to this
process."""

import json
import os
import subprocess
import sys
import time

import numpy as np

from lsr import Retriever
from lsr.indexer import precompile
from test_numba_cache import read_only_package

WORDS = "cats dogs purr bark sun moon rain snow tree river stone bird fish".split()


def small_corpus(path):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(200):
            f.write(json.dumps({"_id": str(i), "text": " ".join(rng.choice(WORDS, 6))}) + "\n")
    return path


COMPILED = """
def compiled():
    '''Cached kernels (module.name) this process compiled (not loaded) -> their signatures.'''
    from lsr.indexer import seismic_build, seismic_search, sorting, topk
    return {f"{m.__name__}.{n}": sorted(map(str, f.stats.cache_misses))
            for m in (seismic_build, seismic_search, sorting, topk) for n, f in vars(m).items()
            if hasattr(f, "stats") and f._cache.__class__.__name__ != "NullCache" and f.stats.cache_misses}
"""

CHILD_SIDE = """
import lsr.indexer
from lsr.indexer import precompile
assert lsr.indexer.__file__.startswith({site!r}), lsr.indexer.__file__
precompile.compile_prune({dim})
precompile.compile_search({dim})
print(json.dumps(compiled()))
"""

PARENT_SIDE = """
from lsr import Retriever
from lsr.indexer import precompile, seismic_search
precompile._start_child = lambda dim, values: None  # the thread compiles both sides, in this process
r = Retriever.build({corpus!r}, model="bm25", path={index!r}, index="seismic")
assert r.search("cats purr", k=3)
stats = seismic_search.search_batch.stats
print(json.dumps(dict(compiled=compiled(), hits=len(stats.cache_hits), misses=len(stats.cache_misses))))
"""


def run_python(code: str, env: dict, cwd) -> dict:
    done = subprocess.run([sys.executable, "-c", "import json\n" + COMPILED + code], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_childs_search_kernels_are_what_the_parent_loads(tmp_path):
    """From an empty cache and a read-only install: what the child compiles (`compile_prune`,
    `compile_search`) lands in `$LSR_CACHE/numba`; a real `Retriever.build` and search
    afterwards load those kernels from there (cache hits, no compilation) and compile only
    `build_lists` (the thread's side); the two sides compile no cached kernel in common (so
    that running them at once cannot race on a cache index)."""
    site = tmp_path / "site"
    read_only_package(site)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), LSR_CACHE=str(tmp_path / "cache"))
    corpus = small_corpus(tmp_path / "c.jsonl")
    # BM25's vocabulary here is 13 words: the search kernels of the <= 65,536-column layout
    child = run_python(CHILD_SIDE.format(site=str(site), dim=13), env, tmp_path)
    assert {"lsr.indexer.seismic_search.search_batch", "lsr.indexer.seismic_build._invert",
            "lsr.indexer.seismic_build.top_components", "lsr.indexer.seismic_build.pack_rows"} <= set(child), child
    assert list((tmp_path / "cache" / "numba").rglob("seismic_search.search_batch-*.nbi"))
    parent = run_python(PARENT_SIDE.format(corpus=str(corpus), index=str(tmp_path / "ix")), env, tmp_path)
    assert parent["hits"] == 1 and parent["misses"] == 0, parent
    assert "lsr.indexer.seismic_build.build_lists" in parent["compiled"], parent
    assert not set(child) & set(parent["compiled"]), set(child) & set(parent["compiled"])
    assert not list(site.rglob("*.nbi"))


def reference_hits(corpus, path):
    exact = Retriever.build(corpus, model="bm25", path=path, index="exact")
    return [(h.doc_id, round(h.score, 2)) for h in exact.search("cats purr", k=5)]


def test_a_failing_child_leaves_the_search_kernels_to_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(precompile, "child_command", lambda dim, values: [sys.executable, "-c", "raise SystemExit(3)"])
    job = precompile.start(13, child=True)
    job.wait_build(timeout=60)  # returns when the child is gone, without its "build" line
    assert job._build_ready.is_set()
    job.join()
    assert job.child.returncode == 3 and not job.child_ok
    corpus = small_corpus(tmp_path / "c.jsonl")
    built = Retriever.build(corpus, model="bm25", path=tmp_path / "ix", index="seismic",
                            seismic={"n_postings": 1000, "values": "float32"})  # fmt: skip
    got = [(h.doc_id, round(h.score, 2)) for h in built.search("cats purr", k=5)]
    assert got == reference_hits(corpus, tmp_path / "exact")


def test_a_child_that_cannot_start_leaves_it_to_the_thread(monkeypatch):
    monkeypatch.setattr(precompile, "child_command", lambda dim, values: ["/nonexistent/python"])
    job = precompile.start(13, child=True)
    job.join()
    assert job.child is None


def test_joining_early_stops_the_child_through_its_stdin():
    """The child exits as soon as its stdin closes (its parent done waiting, or gone): `join`
    with no time left returns at once and leaves no process behind."""
    job = precompile.start(13, child=True)
    start = time.perf_counter()
    job.join(timeout=0)
    assert time.perf_counter() - start < precompile.STOP_GRACE
    assert job.child.returncode == 0  # the watchdog's exit, not a kill


def test_a_child_that_ignores_its_stdin_is_killed(monkeypatch):
    monkeypatch.setattr(precompile, "child_command", lambda dim, values: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(precompile, "STOP_GRACE", 0.5)
    job = precompile.start(13, child=True)
    job.join(timeout=0)
    assert job.child.returncode is not None and job.child.returncode < 0  # killed, and reaped


def test_the_childs_index_has_the_types_of_a_built_one():
    """`compile_search` assembles its index in NumPy, from what `build_lists` returns for lists
    without postings (`no_postings`): the same types and sizes as the kernel's."""
    from lsr.indexer import seismic_build as kb

    docs = precompile.tiny_vectors(300)
    forward = kb.Forward(docs.indptr, docs.indices, docs.values)
    kernel = kb.build_lists(0, 300, np.zeros(301, np.int64), np.zeros(0, np.int32), forward,
                            np.zeros((3, 15), np.int32), np.zeros((3, 15), np.float32), 300, 0.1, 2, 0, 0.4,
                            np.zeros(3, np.int32), docs.indptr, np.zeros(docs.nnz, np.uint32))  # fmt: skip
    mine = precompile.no_postings(300)
    assert [(a.dtype, a.shape) for a in kernel] == [(a.dtype, a.shape) for a in mine]


def test_the_child_imports_this_lsr_whatever_the_working_folder(tmp_path, monkeypatch):
    """`python -m` imports from the working folder first: the child runs beside this `lsr`."""
    (tmp_path / "lsr").mkdir()
    (tmp_path / "lsr" / "__init__.py").write_text("raise ImportError('another lsr')\n")
    monkeypatch.chdir(tmp_path)
    job = precompile.start(13, child=True)
    job.join()
    assert job.child_ok


def test_a_warm_cache_starts_no_child(tmp_path):
    """Once the search kernel is cached, `start` leaves the loading to its thread (a child
    would only add its start-up); from an empty cache it starts one."""
    code = ("from lsr.indexer import precompile\n"
            "print(precompile.search_cached())\n"
            "precompile.compile_search(13)\n"
            "job = precompile.start(13)\njob.join()\n"
            "print(precompile.search_cached(), job.child is None)\n")  # fmt: skip
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "True", "True"]

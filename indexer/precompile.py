"""Compile a Seismic build's kernels ahead of it, on both cores, into Numba's disk cache.

A first (cold) `lsr index` spends most of its time compiling Numba kernels. Numba compiles
under one lock per process and holds the GIL while it types and lowers, so a second thread
adds no compiler. `start(dim, values)` therefore splits the work between two processes:

- a thread of this process compiles `seismic_build.build_lists` (the blocks and summaries,
  the largest kernel), on lists without postings;
- a child process (`python -m lsr.indexer.precompile DIM VALUES`) compiles the pruning,
  top-component and forward-order kernels on 3 documents, says so on its stdout, then the search kernels on a
  3-document index assembled in NumPy, all written to the cache, which this process loads at
  the first call instead of compiling.

The two sides compile disjoint sets of cached kernels (their one shared callee,
`sorting.stable_argsort`, is not cached on disk): Numba writes each kernel's cache index and
data files atomically, but two processes adding different signatures of one kernel at the
same moment can pair an index entry with the other's data file.

The child is a head start only: if it cannot start, fails, or outlives `CHILD_TIMEOUT`, this
process compiles what it missed at the first call; with a warm cache none is started. It exits when its stdin closes (this
process gone or done waiting), and a thread reaps it, so it never lingers or turns zombie.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from lsr.sparse import SparseVectors

log = logging.getLogger(__name__)

DOC_CUT = 15  # any: the kernels' types do not depend on it
CHILD_TIMEOUT = 300.0  # seconds `join` waits for the child: a hung child costs no more than this
STOP_GRACE = 5.0  # seconds a child has to exit once its stdin is closed, before it is killed


def tiny_vectors(dim: int) -> SparseVectors:
    """3 documents touching the first and the last of `dim` columns (a value for each
    code path the real build's types follow)."""
    top = max(int(dim) - 1, 0)
    rows = [([0], [1.0]), ([0, top], [0.5, 2.0]), ([top], [1.5])] if top else [([0], [1.0])] * 3
    return SparseVectors.from_rows(rows, max(int(dim), 1))


def _tiny_forward(dim: int, scratch: str) -> tuple:
    """`tiny_vectors(dim)` as a build sees them: spilled, memory-mapped (`lsr.formats.spill`)."""
    from lsr.formats.spill import VectorSpill

    spill = VectorSpill(Path(scratch) / "vectors")
    spill.add(tiny_vectors(dim))
    v = spill.vectors()
    return np.array(v.indptr, dtype=np.int64), v.indices, v.values, v.dim


def compile_prune(dim: int, values: str = "float16") -> None:
    """Compile (and cache) the kernels of a build's first steps over `dim` columns: pruning
    into inverted lists, each document's top components and the forward index's packing, for
    `values` (the child's first part)."""
    from lsr.indexer import seismic

    with tempfile.TemporaryDirectory(prefix="lsr-compile-") as tmp:
        fwd_ptr, fwd_idx, fwd_val, dim = _tiny_forward(dim, tmp)
        seismic._prune(fwd_ptr, fwd_idx, fwd_val, dim, 1, 1.5)
        seismic._top_components(fwd_ptr, fwd_idx, fwd_val, DOC_CUT, 1)
        rows = np.arange(len(fwd_ptr) - 1, dtype=np.int32)  # doc_order's type
        seismic.pack_forward(fwd_ptr, fwd_idx, fwd_val, rows, dim, values)


def compile_lists(dim: int, values: str = "float16") -> None:
    """Compile (and cache) `build_lists` as a build over `dim` columns calls it, on lists
    without postings (its inputs in the types `_prune` and `_top_components` give them), so
    that no other kernel runs."""
    from lsr.indexer import seismic

    with tempfile.TemporaryDirectory(prefix="lsr-compile-") as tmp:
        fwd_ptr, fwd_idx, fwd_val, dim = _tiny_forward(dim, tmp)
        n = len(fwd_ptr) - 1
        top_c, top_v = np.full((n, DOC_CUT), -1, np.int32), np.zeros((n, DOC_CUT), np.float32)
        words = seismic.pack_words(fwd_idx, fwd_val, dim, values)  # (not pack_forward: the child compiles its kernel)
        list(seismic._build_lists_parallel(np.zeros(dim + 1, np.int64), np.zeros(0, np.int32), fwd_ptr, fwd_idx, fwd_val,
                                      top_c, top_v, dim, 0.1, 2, 0, 0.4, np.zeros(n, np.int32), fwd_ptr, words,
                                      1))  # fmt: skip


def no_postings(n_lists: int) -> tuple[np.ndarray, ...]:
    """What `seismic_build.build_lists` returns for `n_lists` lists without postings (no block,
    no summary), in its types (tested)."""
    return (
        np.zeros(n_lists, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
        np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.uint16),
    )  # fmt: skip


def compile_search(dim: int, values: str = "float16") -> None:
    """Compile (and cache) the kernels of a first search (one query, one thread) of an index
    over `dim` columns, without running a build kernel: the index's arrays are assembled in
    NumPy with every list empty, read-only like a loaded index's memory maps."""
    from lsr.indexer import seismic

    docs = tiny_vectors(dim)
    dim = docs.dim
    arrays = dict(
        fwd_ptr=docs.indptr, fwd_words=seismic.pack_words(docs.indices, docs.values, dim, values),
        post_docs=np.zeros(0, np.int32), **seismic._assemble([no_postings(dim)], np.zeros(dim + 1, np.int64), dim),
        doc_ids=np.arange(len(docs), dtype=np.int32),
    )  # fmt: skip
    for array in arrays.values():
        array.setflags(write=False)
    index = seismic.SeismicIndex(arrays, {"values": values}, dim, len(docs))
    index.search(docs[:1], k=1, threads=1)


class Precompile:
    """The build kernels compiling in a thread and a child process, the search kernels in the
    child: `wait_build()` before the build, `join()` before the first search. Made by `start`."""

    def __init__(self, dim: int, values: str = "float16", child: bool = True) -> None:
        self._start = time.perf_counter()
        self._build_ready = threading.Event()  # the child compiled its build kernels (or is gone)
        self._child_done = threading.Event()
        self.child_ok = False
        self.child = _start_child(dim, values) if child else None
        if self.child is None:
            self._build_ready.set()
        else:
            threading.Thread(target=self._follow_child, name="lsr-compile-child", daemon=True).start()
        self.thread = threading.Thread(target=self._compile, args=(dim, values, self.child is None),
                                       name="lsr-seismic-compile", daemon=True)  # fmt: skip
        self.thread.start()

    def _compile(self, dim: int, values: str, everything: bool) -> None:
        """The thread: `build_lists`; without a child, the child's kernels too."""
        try:
            compile_lists(dim, values)
            if everything:
                compile_prune(dim, values)
                compile_search(dim, values)
            log.debug("Seismic %s kernels compiled after %.1f s", "all" if everything else "build_lists",
                      time.perf_counter() - self._start)  # fmt: skip
        except Exception:  # noqa: BLE001 - only a head start: the real calls compile what this missed
            log.warning("compiling the Seismic kernels in the background failed", exc_info=True)

    def _follow_child(self) -> None:
        """Read the child's "build" line, wait for it (so it never lingers as a zombie), log a
        failure."""
        child = self.child
        for line in child.stdout:
            if line.strip() == b"build":
                self._build_ready.set()
        err = child.stderr.read()
        code = child.wait()
        self.child_ok = code == 0
        self._build_ready.set()
        log.debug("the child compiling Seismic kernels exited (%s) after %.1f s", code,
                  time.perf_counter() - self._start)  # fmt: skip
        if code:
            last = (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            log.info("compiling Seismic kernels in a child process failed (exit %s: %s); "
                     "they compile at their first call", code, last)  # fmt: skip
        self._child_done.set()

    def wait_build(self, timeout: float | None = None) -> None:
        """Wait until the child has cached the build's first kernels (pruning, top components;
        at most `timeout`, default `CHILD_TIMEOUT`), so that the build loads them rather than
        compiling them again. `build_lists` may still be compiling in the thread: the build's
        call waits for it."""
        if not self._build_ready.wait(CHILD_TIMEOUT if timeout is None else timeout):
            log.info("compiling Seismic kernels in a child process takes too long; stopping it")
            self.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread and the child (at most `timeout`, default `CHILD_TIMEOUT`, for
        the child: then it is stopped, and the first search compiles its kernels)."""
        self.thread.join()
        if self.child is None:
            return
        if not self._child_done.wait(CHILD_TIMEOUT if timeout is None else timeout):
            log.info("compiling Seismic kernels in a child process takes too long; stopping it")
        self.close()

    def close(self) -> None:
        """Stop the child if it still runs (it exits when its stdin closes), and reap it."""
        child = self.child
        if child is None:
            return
        if child.stdin and not child.stdin.closed:
            child.stdin.close()
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self._child_done.wait(STOP_GRACE)


def start(dim: int, values: str = "float16", child: bool | None = None) -> Precompile:
    """Start compiling the kernels of a Seismic build over `dim` columns and of its first
    search (see the module docstring); `join()` the result before that search. `child`: use
    a child process (None: unless the cache already holds a search kernel, when the thread
    only loads what is cached and a child would only add its start-up)."""
    return Precompile(dim, values, child=not search_cached() if child is None else child)


def search_cached() -> bool:
    """Whether Numba's cache holds the Seismic search kernel for some signature (a warm cache;
    maybe for another layout, which then compiles in the thread). Reads Numba's cache index
    through its private attributes: any surprise answers False (a child is started)."""
    from lsr.indexer import seismic_search

    try:
        return bool(seismic_search.search_batch._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - another Numba version: no shortcut
        return False


def child_command(dim: int, values: str) -> list[str]:
    """The command line of the child (`main`)."""
    return [sys.executable, "-m", "lsr.indexer.precompile", str(int(dim)), values]


def _start_child(dim: int, values: str) -> subprocess.Popen | None:
    """The child compiling the pruning and search kernels, or None when it cannot start. It
    runs in the folder holding this `lsr` package: `python -m` imports from the working
    folder first, which could hold another `lsr`."""
    import lsr

    try:
        return subprocess.Popen(
            child_command(dim, values), cwd=Path(lsr.__file__).resolve().parents[1],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    except OSError as err:
        log.info("cannot start a process to compile the Seismic search kernels (%s)", err)
        return None


def _exit_when_stdin_closes() -> None:
    """The child's watchdog: the parent closed the pipe (done waiting, or gone). Unbuffered
    reads: a daemon thread blocked in `sys.stdin` would abort the interpreter's shutdown."""
    while os.read(0, 4096):
        pass
    os._exit(0)


def main(argv: list[str]) -> None:
    """The child: `compile_prune`, the line "build", `compile_search`."""
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    dim, values = int(argv[0]), argv[1]
    compile_prune(dim, values)
    print("build", flush=True)
    compile_search(dim, values)


if __name__ == "__main__":
    main(sys.argv[1:])

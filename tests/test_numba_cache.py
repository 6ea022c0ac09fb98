"""Where lsr's compiled Numba kernels are cached (`lsr.cache`): next to the modules when that
folder is writable, else a user cache folder (`$LSR_CACHE/numba`, or the platform's), never
over a `$NUMBA_CACHE_DIR` the user set."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lsr.cache import cache_root, numba_cache_dir, writable

ROOT = Path(__file__).resolve().parents[1]
# the source folders of lsr's packages (pyproject's package-dir), as installed under lsr/
PACKAGES = {"lsr": "lsr", "lsr/indexer": "indexer", "lsr/kernels": "kernels", "lsr/eval": "eval", "lsr/cli": "cli"}


def read_only_package(folder: Path) -> Path:
    """`folder/lsr`, a copy of the lsr package where Numba cannot write next to the kernels:
    `indexer/__pycache__` is a file (unwritable even for root, unlike permission bits)."""
    for target, source in PACKAGES.items():
        shutil.copytree(ROOT / source, folder / target, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "lsr" / "indexer" / "__pycache__").write_text("not a folder")
    return folder / "lsr"


@pytest.fixture
def no_user_setting(monkeypatch):
    for var in ("NUMBA_CACHE_DIR", "LSR_CACHE"):
        monkeypatch.delenv(var, raising=False)


def test_writable_package_keeps_numbas_default(tmp_path, no_user_setting):
    assert writable(tmp_path)
    assert numba_cache_dir(tmp_path) is None


def test_read_only_package_uses_lsr_cache(tmp_path, monkeypatch, no_user_setting):
    package = read_only_package(tmp_path / "site") / "indexer"
    assert not writable(package)
    monkeypatch.setenv("LSR_CACHE", str(tmp_path / "mine"))
    assert numba_cache_dir(package) == tmp_path / "mine" / "numba"


def test_read_only_package_falls_back_to_the_platform_cache(tmp_path, monkeypatch, no_user_setting):
    package = read_only_package(tmp_path / "site") / "indexer"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_cache_dir(package) == cache_root() / "numba"
    if sys.platform.startswith("linux"):
        assert cache_root() == tmp_path / "xdg" / "lsr"


def test_numba_cache_dir_set_by_the_user_wins(tmp_path, monkeypatch, no_user_setting):
    package = read_only_package(tmp_path / "site") / "indexer"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    monkeypatch.setenv("LSR_CACHE", str(tmp_path / "mine"))
    assert numba_cache_dir(package) is None


CHILD = """
import numpy as np, lsr
from lsr.indexer import ExactIndex
from lsr.sparse import SparseVectors
import lsr.indexer
assert lsr.__file__.startswith({site!r}) and lsr.indexer.__file__.startswith({site!r}), lsr.indexer.__file__
docs = SparseVectors.from_rows([([0, 2], [1.0, 2.0]), ([1, 2], [3.0, 1.0])], 3)
ids, _ = ExactIndex.build(docs).search(docs, k=1, threads=1)
print(ids.ravel().tolist())
"""


def test_kernels_compiled_from_a_read_only_install_land_in_the_user_cache(tmp_path):
    """A real build and search in a fresh process from a read-only copy of the package, with
    `$NUMBA_CACHE_DIR` unset: the compiled kernels are written under `$LSR_CACHE/numba`."""
    site = tmp_path / "site"
    read_only_package(site)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), LSR_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", CHILD.format(site=str(site))], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0,", "1]"]
    cached = [p.name for p in (tmp_path / "cache" / "numba").rglob("*.nbi")]
    assert any(name.startswith("exact_kernels.") for name in cached), cached
    assert not list(site.rglob("*.nbi"))


COVERED = """
import json, pathlib, sys, tempfile
import numpy as np
from lsr import Retriever
from lsr.indexer import precompile, seismic, seismic_build, seismic_search, sorting, topk
from lsr.sparse import SparseVectors

precompile._start_child = lambda dim, values: None  # the thread compiles both sides, in this process

def compiled():
    return {(m.__name__, n): len(f.signatures) for m in (seismic_build, seismic_search, sorting, topk)
            for n, f in vars(m).items() if hasattr(f, "signatures")}

precompile.start(1).join()  # BM25's dim is 0 until fitted: the <= 65,536 layout
precompile.start(100_000, "float32").join()
before = compiled()
tmp = pathlib.Path(tempfile.mkdtemp())
words = "cats dogs purr bark sun moon rain snow tree river stone bird fish".split()
rng = np.random.default_rng(0)
with open(tmp / "c.jsonl", "w") as f:
    for i in range(200):
        f.write(json.dumps({"_id": str(i), "text": " ".join(rng.choice(words, 6))}) + "\\n")
r = Retriever.build(tmp / "c.jsonl", model="bm25", path=tmp / "ix", index="seismic")
assert r.search("cats purr", k=3)
rows = [(rng.choice(100_000, 20, replace=False), rng.random(20) + 0.1) for _ in range(300)]
docs = SparseVectors.from_rows(rows, 100_000)
seismic.SeismicIndex.build(iter([docs]), n_postings=5, values="float32").save(tmp / "big")
seismic.SeismicIndex.load(tmp / "big").search(docs[:5], k=10, threads=1)
after = compiled()
# from a warm cache only the entry points load (their callees come inside them)
assert before[("lsr.indexer.seismic_build", "build_lists")] and before[("lsr.indexer.seismic_search", "search_batch")], before
print(json.dumps({f"{m}.{n}": [before.get((m, n), 0), c] for (m, n), c in after.items() if c != before.get((m, n), 0)}))
"""


def test_background_compilation_covers_what_a_build_and_its_first_search_call(tmp_path):
    """`precompile.start` (without its child: `compile_build` and `compile_search` in one thread)
    compiles every Seismic kernel signature that a `Retriever.build` (BM25, streamed chunks)
    and its first search, and a build over 100,000 columns with float32 values, then call:
    nothing is compiled after it (a fresh process). tests/test_precompile.py checks that the
    child's search kernels are the ones the parent's search loads."""
    done = subprocess.run([sys.executable, "-c", COVERED], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def test_the_package_folder_is_probed_once_per_process(tmp_path):
    """`use_numba_cache` runs at two import sites (`lsr.indexer`, `lsr.formats._seismic_scan`):
    the writability probe (a file created in `__pycache__`) runs once."""
    code = ("import lsr.cache as c; calls = []; probe = c.writable\n"
            "c.writable = lambda d: calls.append(d) or probe(d)\n"
            "import lsr.indexer, lsr.formats._seismic_scan\nprint(len(calls))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]

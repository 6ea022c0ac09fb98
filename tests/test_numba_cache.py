"""Where lsr's compiled Numba kernels are cached (`lsr.cache`): next to the modules when that
folder is writable, else a user cache folder (`$LSR_CACHE/numba`, or the platform's), never
over a `$NUMBA_CACHE_DIR` the user set."""

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

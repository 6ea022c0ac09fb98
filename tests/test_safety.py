"""Index safety (issue #11): nothing of the user's is lost, failures are one line and leave
the previous index intact. CLI cases run the installed `lsr` in a subprocess."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import LsrError, SparseVectors
from lsr.indexer import ExactIndex, UnsafeTargetError
from lsr.retriever import Retriever

LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")


def lsr(*args, cwd=None, env=None, timeout=300):
    assert LSR, "the lsr console script is not installed"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([LSR, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) → sha256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "tea.txt").write_text("Green tea is brewed at eighty degrees.")
    (folder / "coffee.txt").write_text("Espresso is coffee brewed under pressure.")
    return folder


REFUSED = "exists and is not an lsr index; choose another --index or remove it"


def assert_one_line_error(result, message):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("indexing ")]  # progress
    assert len(lines) == 1, result.stderr


# ---- data loss: refuse to replace what is not an index -------------------------------------


def test_refuses_a_users_folder(tmp_path, corpus):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    before = snapshot(user)
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", "-i", user), f"{user} {REFUSED}")
    assert snapshot(user) == before and sorted(p.name for p in user.iterdir()) == ["thesis.tex"]


def test_refuses_the_current_folder(tmp_path, corpus):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.md").write_text("keep me")
    before = snapshot(work)
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", "-i", ".", cwd=work), f". {REFUSED}")
    assert snapshot(work) == before and sorted(p.name for p in work.iterdir()) == ["notes.md"]


def test_refuses_the_corpus_folder_itself(corpus):
    before = snapshot(corpus)
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", "-i", corpus), REFUSED)
    assert snapshot(corpus) == before


def test_refuses_the_corpus_file_and_a_file_named_lsr(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "tea"}\n{"_id": "2", "text": "coffee"}\n')
    before = snapshot(corpus)
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", "-i", corpus), f"{corpus} {REFUSED}")
    assert snapshot(corpus) == before
    (tmp_path / ".lsr").write_text("a file the user made")
    before = snapshot(tmp_path / ".lsr")
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", cwd=tmp_path), f".lsr {REFUSED}")  # the default --index
    assert snapshot(tmp_path / ".lsr") == before
    assert not list(tmp_path.glob(".lsr.tmp-*"))


def test_never_writes_inside_the_corpus_nor_around_it(tmp_path, corpus):
    before = snapshot(corpus)
    assert_one_line_error(lsr("index", corpus, "-m", "bm25", "-i", corpus / "ix"), "is inside the corpus")
    assert snapshot(corpus) == before and not (corpus / "ix").exists()
    index = tmp_path / "ix"
    assert lsr("index", corpus, "-m", "bm25", "-i", index).returncode == 0
    inner = index / "extra" / "c.jsonl"  # a corpus inside an index: replacing the index would delete it
    inner.parent.mkdir()
    inner.write_text('{"_id": "1", "text": "tea"}\n')
    before = snapshot(index)
    assert_one_line_error(lsr("index", inner, "-m", "bm25", "-i", index), "is inside")
    assert snapshot(index) == before


def test_replaces_an_index_or_an_empty_folder(tmp_path, corpus):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lsr("index", corpus, "-m", "bm25", "-i", empty).returncode == 0
    (corpus / "more.txt").write_text("Hot cocoa with milk.")
    result = lsr("index", corpus, "-m", "bm25", "-i", empty)
    assert result.returncode == 0 and "indexed 3 documents" in result.stdout
    assert Retriever.load(empty).search("cocoa")[0].doc_id == "more.txt"


def test_python_api_refuses_too(tmp_path, corpus):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "data.csv").write_text("1,2,3")
    before = snapshot(user)
    vectors = SparseVectors.from_rows([([0], [1.0]), ([1], [2.0])], dim=2)
    with pytest.raises(UnsafeTargetError, match=REFUSED):
        ExactIndex.build(vectors).save(user)
    from lsr.indexer.seismic import SeismicIndex

    with pytest.raises(LsrError, match=REFUSED):
        SeismicIndex.build(vectors).save(user / "data.csv")
    with pytest.raises(LsrError, match=REFUSED):
        Retriever.build(corpus, model="bm25", path=user)
    assert snapshot(user) == before and len(list(tmp_path.glob(".*tmp-*"))) == 0


# ---- k limits and API argument checks -------------------------------------------------------


@pytest.fixture
def built(tmp_path, corpus):
    return Retriever.build(corpus, model="bm25", path=tmp_path / "ix")


@pytest.mark.parametrize("index_type", ["exact", "seismic"])
def test_huge_k_is_capped_at_the_number_of_documents(tmp_path, corpus, index_type):
    r = Retriever.build(corpus, model="bm25", path=tmp_path / index_type, index=index_type)
    for k in (10**7, 10**9, 10**20):
        ids, scores = r.search_batch(["brewed", "tea"], k=k)
        assert scores.shape == (2, 2) and sorted(ids[0]) == ["coffee.txt", "tea.txt"] and ids[1] == ["tea.txt"]
        assert len(r.search("brewed", k=k)) == 2
    assert r.search("brewed", k=0) == [] and r.search_batch(["tea"], k=0)[1].shape == (1, 0)


def test_cli_huge_k(tmp_path, built):
    result = lsr("search", "brewed", "-k", "99999999999999999999", "--json", "-i", built.path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2
    result = lsr("search", "brewed", "-k", "-3", "-i", built.path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_api_arguments_are_checked(built):
    with pytest.raises(LsrError, match="k must be >= 0"):
        built.search("tea", k=-1)
    with pytest.raises(LsrError, match="k must be >= 0"):
        built.search_batch(["tea"], k=-1)
    with pytest.raises(TypeError, match="k must be an integer"):
        built.search("tea", k=2.5)
    with pytest.raises(TypeError, match="query must be a string"):
        built.search(None)
    with pytest.raises(TypeError, match="not one string"):
        built.search_batch("tea")
    with pytest.raises(TypeError, match="queries must be strings"):
        built.search_batch(["tea", None])


# ---- corruption: checked on load, in full before the first Numba search, sha256 with --verify --


WORDS = "tea coffee cocoa milk sugar water brewed roasted green black hot cold cup leaf bean".split()


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """An exact and a Seismic index of 60 small documents (built once; tests corrupt copies)."""
    root = tmp_path_factory.mktemp("indexes")
    rng = np.random.default_rng(0)
    lines = [json.dumps({"_id": f"d{i}", "text": " ".join(rng.choice(WORDS, 6))}) for i in range(60)]
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    for kind in ("exact", "seismic"):
        Retriever.build(root / "c.jsonl", model="bm25", path=root / kind, index=kind, seismic={"n_postings": 8})
    return root


def damaged_copy(indexes, tmp_path, kind, file, change):
    """A copy of the `kind` index with `change(array)` applied in place to `file` (same size)."""
    target = tmp_path / kind
    shutil.copytree(indexes / kind, target)
    array = np.load(target / file, mmap_mode="r+")
    change(array)
    array.flush()
    return target


QUERIES = [" ".join(WORDS[i : i + 3]) for i in range(0, len(WORDS), 2)]

CORRUPTIONS = [
    ("exact", "index/list_docs.npy", lambda a: a.__setitem__(slice(None, None, 7), 10**8)),
    ("exact", "index/list_ptr.npy", lambda a: a.__setitem__(len(a) // 2, a[-1] + 9)),
    ("seismic", "index/post_docs.npy", lambda a: a.__setitem__(slice(None, None, 7), 10**8)),
    ("seismic", "index/fwd_words.npy", lambda a: a.__setitem__(slice(None), a | np.uint32(0xFFF0))),
    ("seismic", "index/block_doc_ptr.npy", lambda a: a.__setitem__(1, a[-1] + 9)),
    ("seismic", "index/sum_ckpt.npy", lambda a: a.__setitem__(slice(None), 10**6)),
    ("seismic", "index/list_block_ptr.npy", lambda a: a.__setitem__(slice(1, None), 0)),
    ("exact", "docs/ids.offsets.npy", lambda a: a.__setitem__(2, 10**12)),
    ("seismic", "docs/texts.offsets.npy", lambda a: a.__setitem__(-1, a[-1] - 1)),
]


@pytest.mark.parametrize("kind, file, change", CORRUPTIONS, ids=[f"{k}-{f}" for k, f, _ in CORRUPTIONS])
def test_same_size_corruption_is_an_error_not_a_crash(indexes, tmp_path, kind, file, change):
    path = damaged_copy(indexes, tmp_path, kind, file, change)
    with pytest.raises(LsrError, match=r"index is damaged; rebuild it"):
        r = Retriever.load(path)
        r.search_batch(QUERIES, k=5)  # Numba kernels: out-of-range values would crash here
        r.search(QUERIES[0])


def test_corrupt_header_and_bit_flips(indexes, tmp_path):
    header = tmp_path / "header"
    shutil.copytree(indexes / "exact", header)
    file = header / "index" / "list_docs.npy"
    data = bytearray(file.read_bytes())
    text = data[:128].decode("latin1")
    data[:128] = text.replace("'descr': '<i4',", "'descr': '|O', ").encode("latin1")  # a pickled-object array
    assert data[:128].decode("latin1") != text
    file.write_bytes(bytes(data))
    assert_one_line_error(lsr("search", "tea", "-i", header), "list_docs.npy: unreadable array")
    data = bytearray((indexes / "exact" / "index" / "list_docs.npy").read_bytes())
    data[data.index(b"(") + 1] = 0xD6  # found by the fuzz test: NumPy raises tokenize.TokenError here
    file.write_bytes(bytes(data))
    assert_one_line_error(lsr("info", "--verify", "-i", header), "list_docs.npy: unreadable array")

    for kind, name in (("exact", "list_weights.npy"), ("seismic", "fwd_words.npy")):
        flipped = tmp_path / f"flip-{kind}"
        shutil.copytree(indexes / kind, flipped)
        file = flipped / "index" / name
        data = bytearray(file.read_bytes())
        data[-1] ^= 0x01  # a bit of the last weight: loads and searches, wrong scores; only sha256 tells
        file.write_bytes(bytes(data))
        assert lsr("search", "tea", "-i", flipped).returncode == 0
        assert_one_line_error(lsr("info", "--verify", "-i", flipped), f"{name}: checksum mismatch")
        result = lsr("info", "--verify", "--json", "-i", indexes / kind)
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["verified"] is True and info["n_docs"] == 60 and info["index_kind"] == kind


def test_verify_finds_summary_entries_out_of_their_group(indexes, tmp_path):
    """A damaged summary entry cannot make a search write out of bounds (wrong scores at
    worst); the full value check of --verify names it even without the checksums."""
    path = damaged_copy(indexes, tmp_path, "seismic", "index/sum_entry.npy", lambda a: a.__setitem__(0, a[0] | 0xFF))
    r = Retriever.load(path)
    r.search_batch(QUERIES, k=5)
    with pytest.raises(LsrError, match="sum_entry.npy: summary entries name blocks outside their group"):
        r.index.check_values(full=True)


# ---- disk full ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root: CAP_SYS_ADMIN), or None where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    yield mount if done.returncode == 0 else None
    if done.returncode == 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def big_corpus(path: Path, n: int = 6000) -> Path:
    rng = np.random.default_rng(1)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": str(i), "text": " ".join(rng.choice(WORDS, 60))}) + "\n")
    return path


def test_disk_full_is_one_line_and_keeps_the_previous_index(tmp_path, corpus, small_disk, monkeypatch):
    """On a real 2 MB file system when one can be mounted here (root), else with the write
    that fills the disk simulated: same message, no temporary folder, old index intact."""
    big = big_corpus(tmp_path / "big.jsonl")  # ~2.5 MB of text: the document store alone overflows
    disk = small_disk or tmp_path / "disk"
    index = disk / "ix"
    Retriever.build(corpus, model="bm25", path=index)
    before = [(h.doc_id, h.score) for h in Retriever.load(index).search("brewed")]
    if small_disk is not None:
        result = lsr("index", big, "-m", "bm25", "-i", index)
        assert_one_line_error(result, f"no space left on {disk} (needed ~")
        assert result.stderr.rstrip().endswith("MB)")
    else:
        import errno

        from lsr import docstore

        def full(self, *args):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(docstore.DocStoreWriter, "close", full)
        with pytest.raises(LsrError, match=r"no space left on .* \(needed ~\d+ MB\)"):
            Retriever.build(big, model="bm25", path=index)
    assert sorted(p.name for p in disk.iterdir()) == ["ix"]  # no .ix.tmp-* left behind
    assert [(h.doc_id, h.score) for h in Retriever.load(index).search("brewed")] == before


# ---- permissions: run as an unprivileged user (root ignores permission bits) ---------------------


@pytest.fixture
def as_user(tmp_path):
    """(folder, run): a folder the unprivileged user can use, and `run(*args)` running `lsr`
    as that user: `nobody` through setpriv when the tests run as root, else ourselves."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="lsr-perm-"))
    folder.chmod(0o777)
    prefix = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "running as root: setpriv is needed to drop privileges"
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / ".numba"), "HOME": str(folder)}

    def run(*args):
        return subprocess.run([*prefix, LSR, *map(str, args)], capture_output=True, text=True, cwd=folder, env=env, timeout=300)

    yield folder, run
    for p in folder.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    shutil.rmtree(folder)


def test_unwritable_output_and_unreadable_index_files(as_user, corpus):
    folder, run = as_user
    shutil.copytree(corpus, folder / "corpus")
    for p in [folder / "corpus", *(folder / "corpus").iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (folder / "locked").mkdir(mode=0o555)
    assert_one_line_error(run("index", "corpus", "-m", "bm25", "-i", "locked/ix"), "permission denied")
    assert list((folder / "locked").iterdir()) == []
    Retriever.build(folder / "corpus", model="bm25", path=folder / "ix")
    for p in [folder / "ix", *(folder / "ix").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    assert run("search", "tea", "-i", "ix").returncode == 0
    for name in ("index/list_docs.npy", "docs/texts.npy", "manifest.json", "index/manifest.json"):
        (folder / "ix" / name).chmod(0o000)
        assert_one_line_error(run("search", "tea", "-i", "ix"), f"{name}: permission denied")
        (folder / "ix" / name).chmod(0o644)


def test_unreadable_corpus_subfolder_is_reported(as_user, corpus):
    folder, run = as_user
    shutil.copytree(corpus, folder / "corpus")
    (folder / "corpus" / "sub").mkdir()
    (folder / "corpus" / "sub" / "milk.txt").write_text("Milk tea.")
    for p in [folder / "corpus", *(folder / "corpus").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (folder / "corpus" / "sub").chmod(0o000)
    assert_one_line_error(run("index", "corpus", "-m", "bm25", "-i", "ix"), "sub: cannot read folder (Permission denied)")
    assert not (folder / "ix").exists()
    result = run("index", "corpus", "-m", "bm25", "-i", "ix", "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "indexed 2 documents" in result.stdout and "skipped 1 bad record" in result.stderr and "sub: cannot read folder" in result.stderr


# ---- rebuild race: a reader always sees one whole generation -----------------------------------


def test_load_and_search_while_another_process_rebuilds(tmp_path):
    import time

    for name, n in (("a", 40), ("b", 70)):
        rows = [json.dumps({"_id": f"{name}{i}", "text": f"{name}{i} tea coffee " + "milk " * (i % 5)}) for i in range(n)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    index = tmp_path / "ix"
    Retriever.build(tmp_path / "a.jsonl", model="bm25", path=index)
    seconds = 8.0
    builder = subprocess.Popen(
        [sys.executable, "-c", f"""
import time
from lsr.retriever import Retriever
end, n = time.time() + {seconds}, 0
while time.time() < end:
    for corpus in ("b", "a"):
        Retriever.build({str(tmp_path)!r} + "/" + corpus + ".jsonl", model="bm25", path={str(index)!r})
        n += 1
print(n)
"""],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    loops, end = 0, time.time() + seconds
    try:
        while time.time() < end:
            r = Retriever.load(index)
            hits = r.search("tea milk", k=100)
            ids, _ = r.search_batch(["tea", "coffee milk"], k=100)
            generation = {h.doc_id[0] for h in hits} | {i[0] for q in ids for i in q}
            assert len(generation) == 1 and len(hits) == len(r) == r.manifest["n_docs"] == (40 if generation == {"a"} else 70)
            assert all(h.text.startswith(h.doc_id + " ") for h in hits)
            loops += 1
    finally:
        rebuilds = int(builder.communicate(timeout=120)[0] or 0)
    assert builder.returncode == 0 and rebuilds >= 4 and loops >= 20, (rebuilds, loops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "ix"]  # nothing left behind


# ---- property test over the CLI: random corpora, queries, k values and damaged index files -----

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(
    max_examples=8, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
KS = st.one_of(st.integers(-3, 100), st.sampled_from([10**7, 10**9, 10**20, 2**63, -(2**63)]))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)  # argv: no NUL


def assert_clean(result):
    assert result.returncode in (0, 1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


def hits_of(path: Path, query: str = "tea cocoa milk") -> list:
    return [(h.doc_id, h.score) for h in Retriever.load(path).search(query, k=20)]


@FUZZ
@given(
    kind=st.sampled_from(["exact", "seismic"]), pick=st.integers(0, 10**6), op=st.sampled_from(["flip", "truncate", "header", "zeros"]),
    where=st.floats(0, 1), k=KS, query=TEXT,
)  # fmt: skip
@example(kind="seismic", pick=0, op="header", where=0.0, k=10**20, query="tea milk")  # docs/ids.npy: an object array
def test_fuzz_damaged_index_files(indexes, tmp_path_factory, kind, pick, op, where, k, query):
    """Any damage to any file of an index: `lsr search` and `lsr info --verify` exit 0, 1 or
    2 without a traceback; --verify finds every change to an array or encoder file."""
    path = tmp_path_factory.mktemp("fuzz") / kind
    shutil.copytree(indexes / kind, path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    file = files[pick % len(files)]
    data = bytearray(file.read_bytes())
    at = min(int(where * len(data)), max(len(data) - 1, 0))
    if op == "flip" and data:
        data[at] ^= 0xFF
    elif op == "truncate":
        data = data[:at]
    elif op == "header":
        data[:16] = b"\x93NUMPY\x01\x00v\x00{'descr'"[: min(16, len(data))]
        data[16:80] = b"'|O', 'fortran_order': False, 'shape': (3,), }".ljust(64)[: max(0, min(64, len(data) - 16))]
    elif op == "zeros":
        data[at : at + 64] = bytes(len(data[at : at + 64]))
    changed = bytes(data) != file.read_bytes()
    file.write_bytes(bytes(data))
    result = lsr("search", query or "tea", "-k", k, "--json", "-i", path)
    assert_clean(result)
    if result.returncode == 0:
        assert len(json.loads(result.stdout)) <= 60
    result = lsr("info", "--verify", "-i", path)
    assert_clean(result)
    if changed and file.name != "manifest.json":  # a manifest change can keep it valid (its date)
        assert result.returncode == 1, (file, op, result.stdout)


LINES = st.one_of(
    st.builds(lambda i, t: json.dumps({"_id": i, "text": t}), st.text(min_size=1, max_size=5), TEXT),
    st.sampled_from(['{"_id": 1, "text": broken', "", "{}", '{"_id": "x"}', "\x00\xff", '{"id": "dup", "text": "a"}']),
)


@FUZZ
@given(lines=st.lists(LINES, max_size=8), query=TEXT, k=KS, skip_bad=st.booleans())
@example(lines=['{"_id": "a", "text": "tea"}', '{"_id": "a", "text": "again"}'], query="tea", k=-(2**63), skip_bad=True)
def test_fuzz_corpora_queries_and_k(indexes, tmp_path_factory, lines, query, k, skip_bad):
    """Random corpora indexed over an existing index, then searched with random queries and
    k: exit 0, 1 or 2, no traceback; a failed build leaves the old index answering the same."""
    work = tmp_path_factory.mktemp("fuzz")
    path = work / "ix"
    shutil.copytree(indexes / "exact", path)
    before = hits_of(path)
    corpus = work / "c.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    result = lsr("index", corpus, "-m", "bm25", "-i", path, *(["--skip-bad"] if skip_bad else []))
    assert_clean(result)
    if result.returncode != 0:
        assert hits_of(path) == before and sorted(p.name for p in work.iterdir()) == ["c.jsonl", "ix"]
    result = lsr("search", query or "tea", "-k", k, "--json", "-i", path)
    assert_clean(result)
    if result.returncode == 0:
        assert len(json.loads(result.stdout)) <= max(len(Retriever.load(path)), 0)

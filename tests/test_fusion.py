"""Fusion math against hand-computed examples, and `lsr fuse` on TREC run files."""

import math
import subprocess
import sys

import pytest

from lsr.errors import LsrError
from lsr.fusion import fuse_runs, interpolate, normalize, ranked, rrf

# Two runs of one query, used throughout (numbers worked out by hand in the comments).
SPARSE = {"a": 3.0, "b": 2.0, "c": 1.0}
DENSE = {"b": 0.9, "d": 0.5, "a": 0.1}


def test_minmax_interpolation_by_hand():
    # minmax: sparse a=1, b=0.5, c=0; dense b=1, d=0.5, a=0; missing docs get the run's minimum, 0
    # alpha 0.25: b = .25*.5 + .75*1 = .875; d = .25*0 + .75*.5 = .375; a = .25*1 + .75*0 = .25; c = 0
    fused = interpolate([SPARSE, DENSE], alpha=0.25, norm="minmax")
    assert fused == pytest.approx({"b": 0.875, "d": 0.375, "a": 0.25, "c": 0.0})
    assert [d for d, _ in ranked(fused)] == ["b", "d", "a", "c"]


def test_zscore_interpolation_by_hand():
    # sparse: mean 2, std sqrt(2/3) -> a = +1.22474, b = 0, c = -1.22474
    # dense: mean .5, std sqrt(.32/3) -> b = +1.22474, d = 0, a = -1.22474 (the floor of each run: -1.22474)
    # alpha .5: a = 0; b = .61237; c = .5*(-1.22474) + .5*(-1.22474 floor) = -1.22474; d = -.61237
    z = math.sqrt(1.5)
    fused = interpolate([SPARSE, DENSE], alpha=0.5, norm="zscore")
    assert fused == pytest.approx({"a": 0.0, "b": z / 2, "c": -z, "d": -z / 2})


def test_no_normalisation_missing_doc_gets_the_run_minimum():
    # none, alpha .5: c missing from dense -> dense floor 0.1: c = .5*1 + .5*.1 = .55
    # d missing from sparse -> sparse floor 1.0: d = .5*1 + .5*.5 = .75
    fused = interpolate([SPARSE, DENSE], alpha=0.5, norm="none")
    assert fused == pytest.approx({"a": 1.55, "b": 1.45, "c": 0.55, "d": 0.75})


def test_alpha_extremes_reproduce_one_run_order():
    # alpha 1: the sparse order; d (missing from sparse) ties with c at the floor, d > c by id
    assert [d for d, _ in ranked(interpolate([SPARSE, DENSE], alpha=1.0))] == ["a", "b", "d", "c"]
    # alpha 0: the dense order; c ties with a (dense's last hit) at the floor, c > a by id
    assert [d for d, _ in ranked(interpolate([SPARSE, DENSE], alpha=0.0))] == ["b", "d", "c", "a"]


def test_rrf_by_hand():
    # k=60: b = 1/62 + 1/61, a = 1/61 + 1/63, d = 1/62, c = 1/63
    fused = rrf([SPARSE, DENSE], k=60)
    assert fused == pytest.approx({"b": 1 / 62 + 1 / 61, "a": 1 / 61 + 1 / 63, "d": 1 / 62, "c": 1 / 63})
    assert [d for d, _ in ranked(fused)] == ["b", "a", "d", "c"]
    assert rrf([SPARSE], k=0) == pytest.approx({"a": 1.0, "b": 0.5, "c": 1 / 3})


def test_ties_rank_the_larger_doc_id_first():
    # equal scores: trec_eval's order, document id descending, so y is rank 1 and x rank 2
    assert rrf([{"x": 1.0, "y": 1.0}], k=0) == pytest.approx({"y": 1.0, "x": 0.5})
    assert ranked({"x": 2.0, "y": 2.0, "z": 3.0}) == [("z", 3.0), ("y", 2.0), ("x", 2.0)]


def test_constant_runs_normalise_without_dividing_by_zero():
    assert normalize({"a": 2.0, "b": 2.0}, "minmax") == {"a": 1.0, "b": 1.0}
    assert normalize({"a": 2.0, "b": 2.0}, "zscore") == {"a": 0.0, "b": 0.0}
    assert normalize({}, "minmax") == {}
    # a run with one hit: the hit normalises to 1, the documents it missed get 0
    assert interpolate([{"a": 5.0}, {"a": 0.2, "b": 0.9}], alpha=0.5) == pytest.approx({"a": 0.5, "b": 0.5})
    assert interpolate([{"a": 5.0}, {"a": 0.2, "b": 0.9}], alpha=0.6) == pytest.approx({"a": 0.6, "b": 0.4})


def test_three_runs_share_one_minus_alpha():
    # minmax: r1 a=1 b=0; r2 b=1 a=0; r3 a=1 b=0; weights .5, .25, .25 -> a = .75, b = .25
    fused = interpolate([{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 5.0}, {"a": 9.0, "b": 0.0}], alpha=0.5)
    assert fused == pytest.approx({"a": 0.75, "b": 0.25})


def test_fuse_runs_covers_every_query_and_cuts_depth():
    fused = fuse_runs([{"q1": SPARSE}, {"q1": DENSE, "q2": {"z": 1.0}}], method="rrf", depth=2)
    assert list(fused) == ["q1", "q2"]
    assert [d for d, _ in fused["q1"]] == ["b", "a"]
    assert fused["q2"] == [("z", pytest.approx(1 / 61))]


def test_bad_parameters_are_user_errors():
    with pytest.raises(LsrError, match="alpha"):
        interpolate([SPARSE, DENSE], alpha=1.5)
    with pytest.raises(LsrError, match="normalisation"):
        interpolate([SPARSE, DENSE], norm="l2")
    with pytest.raises(LsrError, match="method"):
        fuse_runs([{"q": SPARSE}], method="max")


def _write(path, hits, tag):
    path.write_text("".join(f"q1 Q0 {d} {r} {s} {tag}\n" for r, (d, s) in enumerate(hits.items(), 1)))
    return path


def _lsr(*args):
    return subprocess.run([sys.executable, "-m", "lsr.cli.app", *map(str, args)], capture_output=True, text=True)


def test_cli_fuse_to_file_and_stdout(tmp_path):
    r1, r2 = _write(tmp_path / "a.txt", SPARSE, "s"), _write(tmp_path / "b.txt", DENSE, "d")
    done = _lsr("fuse", r1, r2, "--method", "interp", "--alpha", "0.25", "-o", tmp_path / "out.txt")
    assert done.returncode == 0, done.stderr
    from lsr.eval.loaders import load_run

    assert load_run(tmp_path / "out.txt") == {"q1": pytest.approx({"b": 0.875, "d": 0.375, "a": 0.25, "c": 0.0})}
    done = _lsr("fuse", r1, r2)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["b", "a", "d", "c"]
    rank, score, tag = lines[0].split()[3:]
    assert (rank, tag) == ("1", "lsr-fuse-rrf") and float(score) == pytest.approx(0.032522, abs=1e-6)


def test_cli_fuse_bad_line_is_one_line_error(tmp_path):
    r1 = _write(tmp_path / "a.txt", SPARSE, "s")
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 high t\n")
    done = _lsr("fuse", r1, bad)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {bad}:2: the score must be a number, got 'high'"

"""benchmarks/harness.py: what every benchmark shares (alternating timing, child peak RSS, table)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness  # noqa: E402


def test_time_alternating_interleaves_engines_and_keeps_the_best(monkeypatch):
    calls = []

    def engine(name):
        def run():
            calls.append(name)
            return len(calls)

        return run

    clock = iter([0.0, 0.03, 0.03, 0.05, 1.0, 1.01, 1.01, 1.05])  # start/stop pairs: a, b, a, b
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    kept, outputs = harness.time_alternating({"a": engine("a"), "b": engine("b")}, rounds=2, warmup=True)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then the rounds alternate
    assert kept == pytest.approx({"a": 0.01, "b": 0.02}) and outputs == {"a": 5, "b": 6}


def test_time_alternating_on_cpu_time_leaves_out_waiting():
    import time

    def busy():  # 20 ms of this thread's CPU time, however busy the host
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass

    kept, _ = harness.time_alternating({"sleeps": lambda: time.sleep(0.05), "busy": busy}, rounds=2,
                                       warmup=False, clock=time.thread_time)
    assert kept["sleeps"] < 0.01 < kept["busy"]  # a sleep (or another process's turn) costs no CPU time
    wall, _ = harness.time_alternating({"sleeps": lambda: time.sleep(0.05)}, rounds=1, warmup=False)
    assert wall["sleeps"] >= 0.05


def test_run_child_reports_the_childs_own_peak_rss(tmp_path):
    code = "import numpy as np; from harness import child_report; a = np.ones(300 * 2**20 // 8); child_report(total=float(a.sum()))"
    report, stdout = harness.run_child(["-c", code])
    assert report["total"] == 300 * 2**20 // 8 and stdout.startswith(harness.RESULT)
    assert report["peak_rss_mib"] >= 300  # the child's array, not this process's memory
    with pytest.raises(harness.ChildFailed, match="ZeroDivisionError"):
        harness.run_child(["-c", "1 / 0"])


def test_markdown_table_puts_engines_side_by_side():
    table = harness.markdown_table(["", "ours", "theirs"], [["s", "1.0", "2.0"], ["MiB", 3, 4]])
    assert table.splitlines() == ["|  | ours | theirs |", "|---|---|---|", "| s | 1.0 | 2.0 |", "| MiB | 3 | 4 |"]

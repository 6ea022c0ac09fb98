"""What every benchmark here shares: alternating best-of-N timing, peak RSS (of this process
or of a child process), and the side-by-side markdown table the figures are printed in.

Scripts import it as `from harness import ...` (run as `python benchmarks/bench_X.py`, this
folder is on `sys.path`; `run_child` puts it there for children too). Benchmarks print
numbers; they never assert on timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
RESULT = "RESULT "  # the prefix of a child's report line


def time_alternating(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: bool = True,
    keep: Callable[[list[float]], float] = min,
    after_round: Callable[[int, dict[str, float]], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Time each engine `rounds` times, the engines alternating within each round, so that
    load from elsewhere on a shared host hits them alike; after one untimed warm-up call each
    (`warmup`: first-call compilation and caches are not counted). Returns `keep` (the best,
    by default) of each engine's times in seconds, and each engine's last output.
    `after_round(round, kept_so_far)` is called after every round (for progress lines).
    `clock`: wall time (`time.perf_counter`) by default; `time.thread_time` counts only the
    calling thread's CPU time (single-thread engines on a busy host: the time others'
    processes take is left out)."""
    clock = clock or time.perf_counter
    outputs: dict[str, Any] = {}
    if warmup:
        for name, fn in fns.items():
            outputs[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            start = clock()
            outputs[name] = fn()
            times[name].append(clock() - start)
        if after_round:
            after_round(r, {name: keep(t) for name, t in times.items()})
    return {name: keep(t) for name, t in times.items()}, outputs


def status_mib(field: str, pid: int | str = "self") -> float:
    """A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`, `RssAnon`) in MiB, of this process
    by default; 0 where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mib() -> float:
    """This process's resident memory now, MiB."""
    return status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (VmHWM), MiB. In a child this is its own:
    `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` would keep the parent's RSS from before exec."""
    return status_mib("VmHWM")


def reset_peak_rss() -> None:
    """Reset the high-water mark to the current RSS (Linux `clear_refs`; a no-op elsewhere), so
    that `peak_rss_mib` afterwards measures only what runs next."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child_report(**fields: Any) -> None:
    """In a child process: print its result line, `fields` plus its own `peak_rss_mib`."""
    print(RESULT + json.dumps({**fields, "peak_rss_mib": peak_rss_mib()}), flush=True)


class ChildFailed(RuntimeError):
    """A child exited non-zero, timed out or printed no result line; the message says why."""


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None) -> tuple[dict[str, Any], str]:
    """Run `python ARGS` in a fresh process (a clean peak RSS of its own) and return the report
    of its last `child_report` line and its whole stdout. `env` is added to this environment."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), full_env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"over {timeout:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no result line"])[-1]
        raise ChildFailed(last)
    return json.loads(lines[-1][len(RESULT):]), done.stdout


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table: engines side by side (cells as given; format numbers before)."""
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)

"""How library code reports progress: one callback shape; only `lsr.cli` draws bars."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """`progress(task, done, total, **fields)`: `task` names the piece of work (one bar per
    name), `done` of `total` units are finished (`total` None: not known yet), and `fields`
    are counts shown beside it (e.g. `docs=`: documents so far, from which a rate follows)."""

    def __call__(self, task: str, done: int, total: int | None = None, **fields: float) -> None: ...


def renamed(progress: Progress | None, task: str) -> Progress | None:
    """`progress` with every report filed under the task `task` (None stays None): a caller
    names the bar of work it hands on (`Retriever.build` reports "indexing")."""
    if progress is None:
        return None
    return lambda _task, done, total=None, **fields: progress(task, done, total, **fields)

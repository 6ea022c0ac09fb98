"""An experiment: every dataset × every system, evaluated into one list of rows (what `lsr eval` runs).

`run_experiment` checks everything it can before any work (metric names, baselines, dataset
folders, models), then runs each (dataset, system) pair; a pair that fails (a bad corpus line,
a crash in Lucene) becomes an `EvalResult` with `error` and the other pairs go on.
`results_table` turns the rows into the columns and cells of the results table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from lsr.encoders import Encoder
from lsr.errors import LsrError
from lsr.eval.metrics import DEFAULT_METRICS, Metric
from lsr.eval.runner import BASELINES, Dataset, EvalResult, System, resolve_systems, run_baseline, run_fusion, run_model, save_results
from lsr.prf import Prf
from lsr.progress import Progress, renamed


def run_experiment(
    datasets: Sequence[str | Path | Dataset],
    models: Sequence[str | Encoder | System | None] = (None,),
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    baselines: Sequence[str] = (),
    split: str = "test",
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
    remove_query_id: bool | None = None,
    k: int = 1000,
    output: Path | None = None,
    cache: Path | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    fuse: bool = False,
    dense: str = "minilm",
    fusion: str = "interp",
    tune_split: str = "train",
    prf: Prf | None = None,
    progress: Progress | None = None,
    on_result: Callable[[EvalResult], None] | None = None,
) -> list[EvalResult]:
    """Evaluate every model (and baseline) on every dataset, in order: one `EvalResult` per row.

    `datasets`: BEIR folders, corpora with `queries` and `qrels` files, or opened `Dataset`s.
    `models`: names resolved as `lsr index` does (None: the default resolution), encoders or
    systems; `baselines`: `bm25` (ours, a row like a model) and/or `BASELINES` (Lucene).
    `fuse`: dense and fused rows per model, α tuned on `tune_split`; `prf` (an `lsr.prf.Prf`):
    `NAME+prf` rows. `progress` gets each row's indexing progress under the task name
    `DATASET · SYSTEM`; `on_result` each row as it completes (failed rows included). With
    `output`, run files and `results.json` are written there.
    """
    metric_names = list(metrics)
    for name in metric_names:
        Metric.parse(name)  # a misspelt metric is an error now, not after every index is built
    lucene = [b for b in baselines if b != "bm25"]
    for baseline in lucene:
        if baseline not in BASELINES:
            raise LsrError(f"unknown baseline {baseline!r} (known: bm25, {', '.join(BASELINES)})")
    opened = [d if isinstance(d, Dataset) else Dataset.open(d, split=split, queries=queries, qrels=qrels, remove_query_id=remove_query_id)
              for d in datasets]  # fmt: skip
    systems = resolve_systems(list(models or [None]) + [b for b in baselines if b == "bm25"], precision=precision)
    prf = prf if prf is not None and prf.enabled else None
    options = dict(k=k, metrics=metric_names, output=output, cache=cache)
    results: list[EvalResult] = []

    def attempt(dataset: Dataset, system: str, run: Callable[[], EvalResult | list[EvalResult]]) -> None:
        try:
            rows = run()
            rows = rows if isinstance(rows, list) else [rows]
        except Exception as error:  # noqa: BLE001  (one row's failure must not lose the others)
            rows = [EvalResult(dataset.name, system, {}, error=_one_line(error))]
        for row in rows:
            results.append(row)
            if on_result:
                on_result(row)

    for dataset in opened:
        for system in systems:
            task = renamed(progress, f"{dataset.name} · {system.name}")
            if fuse:
                train = Dataset.open(dataset.corpus, split=tune_split, remove_query_id=remove_query_id)
                attempt(dataset, system.name, lambda: run_fusion(dataset, train, system, dense=dense, batch_size=batch_size,
                                                                 progress=task, prf=prf, fusion=fusion, **options))  # fmt: skip
                continue
            attempt(dataset, system.name, lambda: run_model(dataset, system, batch_size=batch_size, progress=task, **options))
            if prf:
                attempt(dataset, f"{system.name}+prf", lambda: run_model(dataset, system, batch_size=batch_size, prf=prf, **options))
        for baseline in lucene:
            task = renamed(progress, f"{dataset.name} · {baseline} (Lucene index + search)")
            if task:
                task("", 0, None)
            attempt(dataset, baseline, lambda: run_baseline(dataset, baseline, **options))
            if task:
                task("", 1, 1)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        save_results(results, output / "results.json")
    return results


def _one_line(error: Exception) -> str:
    """An error as one line: an `LsrError`'s message, else `Type: first line` (not a Java stack)."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return text if isinstance(error, LsrError) else f"{type(error).__name__}: {text}"


def results_table(results: Sequence[EvalResult], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The results table: its columns (`dataset`, `system`, one per metric) and one row of cells
    per result (metrics to 4 decimals, `failed` for a failed run; systems by `short_names`)."""
    names = short_names([r.system for r in results])
    rows = [[r.dataset, names[r.system], *(["failed"] * len(metrics) if r.error else [f"{r.metrics[m]:.4f}" for m in metrics])]
            for r in results]  # fmt: skip
    return ["dataset", "system", *metrics], rows


def short_names(systems: Sequence[str]) -> dict[str, str]:
    """Display names for the table: a model path or hub id shortened to its last parts, as few
    as keep the names distinct (`/tmp/ckpt/run-a/model` -> `model`, or `run-a/model` when
    another system also ends in `model`). results.json keeps the full names."""
    parts = {s: s.rstrip("/").split("/") for s in systems}
    for keep in range(1, max((len(p) for p in parts.values()), default=1) + 1):
        names = {s: "/".join(p[-keep:]) for s, p in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {s: s for s in systems}

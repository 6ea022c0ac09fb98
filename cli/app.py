"""`lsr`: the command line. A thin face over the Python API: parse, show progress, print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lsr.errors import LsrError

app = typer.Typer(
    help="Learned sparse retrieval: index a corpus, search it, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)  # soft wrap: never break a line in pipes/files
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_INDEX = ".lsr"


def default_index() -> Path:
    return Path(os.environ.get("LSR_INDEX", DEFAULT_INDEX))


IndexOption = typer.Option(None, "--index", "-i", help="Index directory [default: $LSR_INDEX or ./.lsr].")
PrecisionOption = typer.Option(
    "fp32", "--precision",
    help="SPLADE backbone precision: fp32, bf16 or int8 (dynamic quantisation of its Linear layers; CPU).",
)  # fmt: skip


def _progress_bar():
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[docs]:,} docs"),
        TextColumn("{task.fields[rate]:,.0f} docs/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@app.command()
def index(
    path: Path = typer.Argument(..., help="Corpus: a folder of documents, a .jsonl/.tsv/TREC file, or a BEIR folder."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="Encoder: 'bm25', a Hugging Face id or a model folder [default: $LSR_MODEL, else an inference-free hub model, else bm25 when offline].",
    ),  # fmt: skip
    index_dir: Optional[Path] = IndexOption,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Documents encoded per batch."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed records and unreadable files (counted)."),
    index_type: str = typer.Option("auto", "--index-type", help="exact, seismic, or auto (seismic from 100,000 documents on)."),
    n_postings: int = typer.Option(3500, "--n-postings", help="Seismic: postings kept per list on average (static pruning)."),
    max_fraction: float = typer.Option(1.5, "--max-fraction", help="Seismic: a list keeps at most max_fraction × n_postings."),
    centroid_fraction: float = typer.Option(0.1, "--centroid-fraction", help="Seismic: share of a list's documents sampled as block centroids."),
    summary_energy: float = typer.Option(0.4, "--summary-energy", help="Seismic: share of a block summary's L1 mass kept."),
    doc_cut: int = typer.Option(15, "--doc-cut", help="Seismic: a document's top components used to cluster it."),
    values: str = typer.Option("float16", "--values", help="Seismic: forward-index values, float16 (half the memory) or float32 (exact scores)."),
    precision: str = PrecisionOption,
) -> None:
    """Encode and index every document under PATH."""
    import time

    from lsr.retriever import Retriever

    from lsr.indexer.seismic import VALUE_TYPES

    if values not in VALUE_TYPES:
        raise typer.BadParameter(" or ".join(VALUE_TYPES), param_hint="--values")
    from lsr.encoders.splade import PRECISIONS

    if precision not in PRECISIONS:
        raise typer.BadParameter(" or ".join(PRECISIONS), param_hint="--precision")
    index_dir = index_dir or default_index()
    if precision != "fp32":
        from lsr.encoders import resolve_model

        model = resolve_model(model, precision=precision)
    start = time.perf_counter()
    bar = _progress_bar()
    task = bar.add_task("indexing", total=None, docs=0, rate=0.0)

    def progress(docs: int, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()  # on the first batch: an error in the input shows no empty bar
        rate = docs / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, docs=docs, rate=rate)

    try:
        seismic = dict(n_postings=n_postings, max_fraction=max_fraction, centroid_fraction=centroid_fraction,
                       summary_energy=summary_energy, doc_cut=doc_cut, values=values)  # fmt: skip
        retriever = Retriever.build(
            path, model=model, path=index_dir, batch_size=batch_size, skip_bad=skip_bad, progress=progress,
            index=index_type, seismic=seismic,
        )  # fmt: skip
    finally:
        if bar.live.is_started:
            bar.stop()
    report = retriever.last_build
    out.print(
        f"indexed {report.n_docs:,} documents in {report.seconds:.1f} s ({report.docs_per_second:,.0f} docs/s) "
        f"into {index_dir} ({report.index_kind} index, {retriever.manifest['nnz']:,} postings)"
    )
    if report.skipped:
        err.print(f"skipped {len(report.skipped)} bad record(s):")
        for line in report.skipped[:10]:
            err.print(f"  {line}", markup=False)
        if len(report.skipped) > 10:
            err.print(f"  ... and {len(report.skipped) - 10} more")


def _snippet(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


@app.command()
def search(
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of hits."),
    index_dir: Optional[Path] = IndexOption,
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    exact: bool = typer.Option(False, "--exact", help="Exact top-k even on an approximate (Seismic) index."),
    query_cut: int = typer.Option(10, "--query-cut", help="Seismic: the query's largest terms whose lists are visited."),
    heap_factor: float = typer.Option(0.7, "--heap-factor", help="Seismic: skip a block whose summary score < heap_factor × k-th best."),
) -> None:
    """Search the index and print ranked hits."""
    from lsr.retriever import Retriever

    retriever = Retriever.load(index_dir or default_index(), exact=exact)
    hits = retriever.search(query, k=k, query_cut=query_cut, heap_factor=heap_factor)
    if as_json:
        rows = [{"rank": i, "doc_id": h.doc_id, "score": h.score, "title": h.title, "text": h.text} for i, h in enumerate(hits, 1)]
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    if not hits:
        out.print("no hits")
        return
    for i, h in enumerate(hits, 1):
        out.print(f"[bold]{i:>3}.[/bold] [cyan]{h.score:8.3f}[/cyan]  [bold]{h.doc_id}[/bold]  {h.title}".rstrip(), markup=True)
        out.print(f"      {_snippet(h.text)}", markup=False)


@app.command("eval")
def evaluate_command(
    datasets: list[Path] = typer.Argument(..., help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or corpora with --queries/--qrels."),
    models: list[str] = typer.Option(
        [], "--model", "-m",
        help="Encoder(s) to evaluate, repeat for several: 'bm25', a Hugging Face id or a model folder. Default: $LSR_MODEL, else an inference-free hub model, else bm25 when offline.",
    ),  # fmt: skip
    split: str = typer.Option("test", "--split", help="BEIR qrels split."),
    k: int = typer.Option(1000, "--k", "-k", min=1, help="Hits retrieved per query."),
    metrics: str = typer.Option("ndcg@10,mrr@10,recall@100,recall@1000,map,p@10", "--metrics", help="Comma-separated metrics."),
    baselines: list[str] = typer.Option([], "--baseline", help="Reference rows: bm25 (ours) or pyserini-bm25 (Anserini, needs lsr[pyserini])."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Queries file (jsonl, tsv or TREC topics) for a non-BEIR corpus."),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="TREC qrels for a non-BEIR corpus."),
    output: Path = typer.Option(Path("lsr-eval"), "--output", "-o", help="Folder for results.json and TREC run files."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    precision: str = PrecisionOption,
) -> None:
    """Encode, index, search and score datasets; print one table, write JSON and run files."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from lsr.eval.runner import Dataset, resolve_systems, run_baseline, run_model, save_results

    from lsr.encoders.splade import PRECISIONS

    if precision not in PRECISIONS:
        raise typer.BadParameter(" or ".join(PRECISIONS), param_hint="--precision")
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    lucene = [b for b in baselines if b != "bm25"]
    opened = [Dataset.open(path, split=split, queries=queries, qrels=qrels) for path in datasets]
    systems = resolve_systems((models or [None]) + [b for b in baselines if b == "bm25"], precision=precision)
    results = []
    for dataset in opened:
        for system in systems:
            bar = _progress_bar()
            task = bar.add_task(f"{dataset.name} · {system.name}", total=None, docs=0, rate=0.0)
            start = time.perf_counter()

            def progress(docs: int, done: int, total: int) -> None:
                if not bar.live.is_started:
                    bar.start()
                bar.update(task, completed=done, total=total, docs=docs, rate=docs / max(time.perf_counter() - start, 1e-9))

            try:
                results.append(run_model(dataset, system, k=k, metrics=metric_names, output=output, batch_size=batch_size, progress=progress))
            finally:
                if bar.live.is_started:
                    bar.stop()
        for baseline in lucene:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as spin:
                spin.add_task(f"{dataset.name} · {baseline} (Lucene index + search)")
                results.append(run_baseline(dataset, baseline, k=k, metrics=metric_names, output=output))
    output.mkdir(parents=True, exist_ok=True)
    save_results(results, output / "results.json")
    table = Table(title=f"split: {split}, k={k} (trec_eval -c)")
    table.add_column("dataset")
    table.add_column("system")
    for m in metric_names:
        table.add_column(m, justify="right")
    for r in results:
        table.add_row(r.dataset, r.system, *(f"{r.metrics[m]:.4f}" for m in metric_names))
    out.print(table, width=None if out.is_terminal else 160)
    out.print(f"results: {output / 'results.json'}", markup=False)


@app.command()
def info(index_dir: Optional[Path] = IndexOption) -> None:
    """Describe an index: documents, postings, encoder, size on disk."""
    from lsr.retriever import Retriever

    path = index_dir or default_index()
    m = Retriever.load(path).manifest
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    out.print(f"index      {path}", markup=False)
    out.print(f"created    {m['created']}", markup=False)
    out.print(f"documents  {m['n_docs']:,}", markup=False)
    out.print(f"postings   {m['nnz']:,} over {m['dim']:,} dimensions ({m['index_kind']} index)", markup=False)
    out.print(f"encoder    {json.dumps(m['encoder'])}", markup=False)
    out.print(f"corpus     {m['corpus']}", markup=False)
    out.print(f"size       {size / 2**20:,.1f} MiB", markup=False)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    import logging

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        app()
    except LsrError as error:
        err.print("[bold red]error:[/bold red] ", end="")
        err.print(str(error), markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

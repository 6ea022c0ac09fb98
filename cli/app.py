"""`lsr`: the command line. A thin face over the Python API: parse, show progress, print."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperOption

from lsr.encoders.splade import PRECISIONS
from lsr.errors import LsrError
from lsr.fusion import METHODS, NORMS
from lsr.retriever import INDEX_TYPES, MODES


class _Choice(str, Enum):
    """An option's choices: typer checks them (one standard line for a bad value); members are
    the strings themselves, so the library gets plain values."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


def _choices(name: str, values: tuple[str, ...]) -> type[_Choice]:
    return _Choice(name, [(v, v) for v in values])


Precision = _choices("Precision", PRECISIONS)
IndexType = _choices("IndexType", INDEX_TYPES)
Mode = _choices("Mode", MODES)
Fusion = _choices("Fusion", METHODS)
Norm = _choices("Norm", NORMS)
# not importable without Numba (SeismicIndex.VALUE_TYPES, lsr.eval.runner.BASELINES): the library checks them again
Values = _choices("Values", ("float16", "float32"))
Baseline = _choices("Baseline", ("bm25", "pyserini-bm25"))

app = typer.Typer(
    help="Learned sparse retrieval: index a corpus, search it, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# typer's private hook for the type shown beside an option; other typer versions lack it
# (then --help may show `<bool>` beside flags, and nothing breaks)
_display_type_rich = getattr(TyperOption, "display_type_rich", None)


def _flag_type(self: TyperOption, ctx) -> str | None:
    """A flag takes no value: no `<bool>` beside it in --help (typer shows one)."""
    return None if self.is_flag else _display_type_rich(self, ctx)


if _display_type_rich is not None:
    TyperOption.display_type_rich = _flag_type


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"lsr {version('lsr')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print lsr's version and exit."),
) -> None:
    """Learned sparse retrieval: index a corpus, search it, evaluate it."""


out = Console(highlight=False, soft_wrap=True)  # soft wrap: never break a line in pipes/files
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_INDEX = ".lsr"


def default_index() -> Path:
    return Path(os.environ.get("LSR_INDEX", DEFAULT_INDEX))


# Help texts are rich markup: a literal "[" is written "\\[" (else "[default: ...]" vanishes).
IndexOption = typer.Option(None, "--index", "-i", help="Index directory \\[default: $LSR_INDEX or ./.lsr].")
RayOption = typer.Option(
    None, "--ray", metavar="ADDRESS",
    help="Search a sharded index in Ray actors holding its shards (docs/scale.md): 'local', 'auto', HOST:PORT or ray://HOST:10001.",
)  # fmt: skip
ActorsOption = typer.Option(None, "--actors", min=1, help="With --ray: search actors \\[default: one per shard].")
PrecisionOption = typer.Option(
    "fp32", "--precision",
    help="SPLADE backbone precision: fp32, bf16 or int8 (dynamic quantisation of its Linear layers; CPU).",
)  # fmt: skip


class _Bars:
    """Rich progress bars on stderr, one per task name: an `lsr.progress.Progress` to hand to the
    library. The display starts with the first report (an error in the input shows no empty
    bar) and stops when the `with` block ends. A numeric field (`docs=N`) is shown as a count
    and a rate measured from the task's first report on; `info=` as it is."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False,
        )  # fmt: skip
        self.tasks: dict[str, tuple[int, float, dict]] = {}  # name -> (bar task, first report's time and fields)

    def __call__(self, task: str, done: int, total: int | None = None, **fields) -> None:
        import time

        now = time.perf_counter()
        if not self.bar.live.is_started:
            self.bar.start()
        if task not in self.tasks:
            self.tasks[task] = (self.bar.add_task(task, total=total, info=""), now, dict(fields))
        task_id, start, first = self.tasks[task]
        info = [str(fields.pop("info"))] if "info" in fields else []
        # a rate over what came after the first report: when the first batch began is not known
        info += [f"{value:,} {name}  {(value - first[name]) / max(now - start, 1e-9):,.0f} {name}/s" for name, value in fields.items()]
        self.bar.update(task_id, completed=done, total=total, info="  ".join(info))

    def print(self, *args, **kwargs) -> None:
        """Print on stderr above the bars."""
        self.bar.console.print(*args, **kwargs)

    def __enter__(self) -> "_Bars":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


@app.command()
def index(
    path: Path = typer.Argument(..., help="Corpus: a folder of documents, a .jsonl/.tsv/.docs/TREC/SMART file, or a BEIR folder."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="Encoder: 'bm25', a Hugging Face id or a model folder \\[default: $LSR_MODEL, else an inference-free hub model, else bm25 when offline].",
    ),  # fmt: skip
    index_dir: Optional[Path] = IndexOption,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Documents encoded per batch."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed records and unreadable files (counted)."),
    index_type: IndexType = typer.Option("auto", "--index-type", help="exact, seismic, or auto (seismic from 100,000 documents on)."),
    n_postings: int = typer.Option(3500, "--n-postings", help="Seismic: postings kept per list on average (static pruning)."),
    max_fraction: float = typer.Option(1.5, "--max-fraction", help="Seismic: a list keeps at most max_fraction × n_postings."),
    centroid_fraction: float = typer.Option(0.1, "--centroid-fraction", help="Seismic: share of a list's documents sampled as block centroids."),
    summary_energy: float = typer.Option(0.4, "--summary-energy", help="Seismic: share of a block summary's L1 mass kept."),
    doc_cut: int = typer.Option(15, "--doc-cut", help="Seismic: a document's top components used to cluster it."),
    values: Values = typer.Option("float16", "--values", help="Seismic: forward-index values, float16 (half the memory) or float32 (exact scores)."),
    dense: Optional[str] = typer.Option(None, "--dense", help="Also store a dense index: a sentence-transformers model, or 'minilm' (the packaged all-MiniLM-L6-v2)."),
    precision: Precision = PrecisionOption,
    ray_address: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS",
        help="Encode on a Ray cluster into a sharded index (docs/scale.md): 'local' starts one here, 'auto' joins the running one, or ray://HOST:10001.",
    ),
    shards: int = typer.Option(0, "--shards", min=0, help="With --ray: shards in the index \\[default: one per encoding actor]."),
    actors: int = typer.Option(0, "--actors", min=0, help="With --ray: encoding actors \\[default: one per GPU, else one per CPU of the cluster]."),
    keep_fields: str = typer.Option("", "--keep-fields", metavar="NAMES", help="Store these fields of JSONL records (comma-separated; a.b: nested) for `lsr search --where`."),
    append: bool = typer.Option(False, "--append", help="Add the documents to the existing index (its own encoder; an id already there is replaced) instead of rebuilding it."),
) -> None:
    """Encode and index every document under PATH."""
    from lsr.encoders import resolve_model
    from lsr.fields import parse_field_names
    from lsr.retriever import Retriever

    index_dir = index_dir or default_index()
    if not path.exists():  # before a model is resolved (and perhaps warned about)
        raise LsrError(f"{path}: no such file or folder")
    if append:
        return _append(path, index_dir, model, keep_fields, batch_size, skip_bad, ray_address or shards or actors or dense)
    encoder = resolve_model(model, precision=precision)  # before the bar: docs/s is indexing only
    seismic = dict(n_postings=n_postings, max_fraction=max_fraction, centroid_fraction=centroid_fraction,
                   summary_energy=summary_energy, doc_cut=doc_cut, values=values)  # fmt: skip
    if ray_address or shards or actors:
        if keep_fields:
            raise LsrError("--keep-fields is not available with --ray")
        return _index_on_ray(path, model, encoder, index_dir, ray_address, shards, actors, batch_size, skip_bad,
                             index_type, seismic, dense, precision)  # fmt: skip
    with _Bars() as bars:
        retriever = Retriever.build(
            path, model=encoder, path=index_dir, batch_size=batch_size, skip_bad=skip_bad, progress=bars,
            index=index_type, seismic=seismic, dense=dense, keep_fields=parse_field_names(keep_fields),
        )  # fmt: skip
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


def _append(path: Path, index_dir: Path, model, keep_fields: str, batch_size: int, skip_bad: bool, other) -> None:
    """`lsr index --append`: Retriever.append with the bar and a summary line."""
    from lsr.retriever import Retriever

    if model or keep_fields or other:
        raise LsrError("--append adds to the index with its own encoder and fields: drop --model, --keep-fields, --dense and --ray")
    retriever = Retriever.load(index_dir)
    with _Bars() as bars:
        retriever = retriever.append(path, batch_size=batch_size, skip_bad=skip_bad, progress=bars)
    report = retriever.last_build
    replaced = f", {report.replaced:,} of them replacing documents with the same id" if report.replaced else ""
    out.print(
        f"added {report.n_docs:,} documents{replaced} in {report.seconds:.1f} s to {index_dir} "
        f"({len(retriever):,} documents, {len(retriever.index.segments)} segment(s))"
    )
    if report.skipped:
        err.print(f"skipped {len(report.skipped)} bad record(s)")


@app.command()
def delete(
    doc_ids: list[str] = typer.Argument(None, help="Document ids to delete."),
    ids_file: Optional[Path] = typer.Option(None, "--file", "-f", help="Also delete the ids in this file (one per line)."),
    index_dir: Optional[Path] = IndexOption,
) -> None:
    """Delete documents from the index by id (an id not in the index is an error; nothing is deleted then)."""
    from lsr.formats.lines import LineFile
    from lsr.retriever import Retriever

    wanted = list(doc_ids or [])
    if ids_file is not None:
        wanted += [line.strip() for _, line in LineFile(ids_file).lines() if line and line.strip()]
    if not wanted:
        raise LsrError("no document ids given (as arguments or with --file)")
    path = index_dir or default_index()
    retriever = Retriever.load(path).delete(wanted)
    out.print(f"deleted {len(set(wanted)):,} documents from {path} ({len(retriever):,} left, {len(retriever.index.segments)} segment(s))")


@app.command()
def merge(index_dir: Optional[Path] = IndexOption) -> None:
    """Merge a grown index's segments into one without the deleted documents (faster searches)."""
    from lsr.retriever import Retriever

    path = index_dir or default_index()
    retriever = Retriever.load(path).merge()
    out.print(f"merged {path}: {len(retriever):,} documents in {len(retriever.index.segments)} segment(s)")


def _index_on_ray(path, model, encoder, index_dir, address, shards, actors, batch_size, skip_bad, index_type,
                  seismic, dense, precision) -> None:  # fmt: skip
    """`lsr index --ray`: lsr.shards.build_sharded, with the same bar and summary line."""
    import logging

    from lsr.encoders import chosen_model
    from lsr.encoders.bm25 import Bm25Encoder

    if not address:
        raise LsrError("--shards and --actors need --ray ADDRESS ('local' for a cluster on this machine)")
    if dense:
        raise LsrError("--dense is not available with --ray")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise LsrError("--ray needs Ray: pip install 'lsr[ray]'")
    from lsr.shards import build_sharded

    import ray.data  # noqa: F401  (configures its loggers on import: quieten them after)

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines would mix with the bar
    # a learned model is loaded by name in every actor (on its GPU); BM25 is shipped as it is
    name = encoder if isinstance(encoder, Bm25Encoder) else chosen_model(model)
    with _Bars() as bars:
        report = build_sharded(
            path, model=name, encoder=encoder, path=index_dir, shards=shards or None, address=address, actors=actors or None,
            batch_size=batch_size, skip_bad=skip_bad, index=index_type, seismic=seismic, precision=precision,
            progress=bars,
        )  # fmt: skip
    out.print(
        f"indexed {report.n_docs:,} documents in {report.seconds:.1f} s ({report.docs_per_second:,.0f} docs/s) "
        f"into {index_dir} ({report.n_shards} shards, {report.n_actors} encoding actors"
        f"{', a GPU each' if report.gpus_per_actor else ''})"
    )
    if report.skipped:
        err.print(f"skipped {len(report.skipped)} bad record(s)")


def _snippet(text: str, width: int = 200) -> str:
    """`text` with its whitespace collapsed, cut at a word to at most `width` characters (… included)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    if width < 2:
        return "…"[:width]
    return text[: width - 1].rsplit(" ", 1)[0] + "…"


@app.command()
def search(
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of hits."),
    index_dir: Optional[Path] = IndexOption,
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    exact: bool = typer.Option(False, "--exact", help="Exact top-k even on an approximate (Seismic) index."),
    query_cut: int = typer.Option(10, "--query-cut", help="Seismic: the query's largest terms whose lists are visited."),
    heap_factor: float = typer.Option(0.7, "--heap-factor", help="Seismic: skip a block whose summary score < heap_factor × k-th best."),
    snippet: Optional[int] = typer.Option(None, "--snippet", min=0, help="Characters of text per hit, cut at a word \\[default: 200 in the table, the whole text with --json]."),
    mode: Mode = typer.Option("sparse", "--mode", help="sparse, dense (needs `lsr index --dense`) or fused."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="fused: weight of the sparse run (1 - alpha for dense)."),
    fusion: Fusion = typer.Option("interp", "--fusion", help="fused: interp (score interpolation) or rrf."),
    prf_docs: int = typer.Option(0, "--prf-docs", min=0, help="Pseudo-relevance feedback: top documents fed back (0: off)."),
    prf_terms: int = typer.Option(20, "--prf-terms", min=1, help="PRF: feedback terms added to the query."),
    prf_weight: float = typer.Option(0.1, "--prf-weight", min=0.0, help="PRF: weight of the feedback vector."),
    ray_address: Optional[str] = RayOption,
    actors: Optional[int] = ActorsOption,
    where: Optional[str] = typer.Option(None, "--where", help="Only documents whose kept fields (lsr index --keep-fields) match, e.g. 'year>=2020 and source=pubmed'."),
) -> None:
    """Search the index and print ranked hits."""
    from lsr.prf import Prf
    from lsr.retriever import Retriever

    retriever = Retriever.load(index_dir or default_index(), exact=exact, ray=ray_address, actors=actors)
    if mode == "sparse" and not prf_docs:
        hits = retriever.search(query, k=k, query_cut=query_cut, heap_factor=heap_factor, filter=where)
    else:
        prf = Prf(prf_docs, prf_terms, prf_weight)
        hits = retriever.search(query, k=k, mode=mode, alpha=alpha, fusion=fusion, prf=prf, query_cut=query_cut, heap_factor=heap_factor,
                                filter=where)  # fmt: skip
    if as_json:
        texts = [h.text if snippet is None else _snippet(h.text, snippet) for h in hits]
        rows = [{"rank": i, "doc_id": h.doc_id, "score": h.score, "title": h.title, "text": t} for i, (h, t) in enumerate(zip(hits, texts), 1)]
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    if not hits:
        out.print("no hits")
        return
    for i, h in enumerate(hits, 1):
        out.print(f"[bold]{i:>3}.[/bold] [cyan]{h.score:8.3f}[/cyan]  [bold]{h.doc_id}[/bold]  {h.title}".rstrip(), markup=True)
        if snippet != 0:
            out.print(f"      {_snippet(h.text, 200 if snippet is None else snippet)}", markup=False)


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
    baselines: list[Baseline] = typer.Option([], "--baseline", help="Reference rows: bm25 (ours) or pyserini-bm25 (Anserini, needs lsr\\[pyserini])."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Queries file (jsonl, tsv, TREC topics or SMART .QRY) for a non-BEIR corpus."),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Qrels (TREC, BEIR tsv, SMART .REL or 'qid docid') for a non-BEIR corpus."),
    output: Path = typer.Option(Path("lsr-eval"), "--output", "-o", help="Folder for results.json and TREC run files."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    remove_query_id: Optional[bool] = typer.Option(
        None, "--remove-query-id/--keep-query-id",
        help="Drop hits whose doc id equals the query id, from scores and run files alike. Default: on for BEIR's ArguAna and Quora (by folder name), off elsewhere.",
    ),  # fmt: skip
    fuse: bool = typer.Option(False, "--fuse", help="Also a dense run and its fusion with each model's run, alpha tuned on --tune-split (BEIR folders)."),
    dense: str = typer.Option("minilm", "--dense", help="--fuse: the dense model ('minilm': the packaged all-MiniLM-L6-v2)."),
    fusion: Fusion = typer.Option("interp", "--fusion", help="--fuse: interp (alpha tuned) or rrf."),
    tune_split: str = typer.Option("train", "--tune-split", help="--fuse: the BEIR split alpha is tuned on (grid 0.0..1.0 step 0.1, nDCG@10)."),
    prf_docs: int = typer.Option(0, "--prf-docs", min=0, help="Pseudo-relevance feedback: top documents fed back (0: off); adds NAME+prf rows."),
    prf_terms: int = typer.Option(20, "--prf-terms", min=1, help="PRF: feedback terms added to the query."),
    prf_weight: float = typer.Option(0.1, "--prf-weight", min=0.0, help="PRF: weight of the feedback vector."),
    precision: Precision = PrecisionOption,
) -> None:
    """Encode, index, search and score datasets; print one table, write JSON and run files."""
    from rich.table import Table

    from lsr.eval.experiment import results_table, run_experiment
    from lsr.eval.metrics import Metric
    from lsr.prf import Prf

    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metric_names:
        Metric.parse(name)  # a misspelt metric is an error now, not after every index is built
    with _Bars() as bars:

        def report(result) -> None:
            if result.error:
                bars.print(f"[bold red]error:[/bold red] {result.dataset} · {result.system} failed: ", end="")
                bars.print(result.error, markup=False)

        results = run_experiment(
            datasets, models or [None], metric_names, baselines=baselines, split=split, queries=queries, qrels=qrels,
            remove_query_id=remove_query_id, k=k, output=output, batch_size=batch_size, precision=precision, fuse=fuse,
            dense=dense, fusion=fusion, tune_split=tune_split, prf=Prf(prf_docs, prf_terms, prf_weight),
            progress=bars, on_result=report,
        )  # fmt: skip
    columns, rows = results_table(results, metric_names)
    table = Table(title=f"split: {split}, k={k} (trec_eval -c)")
    table.add_column(columns[0], overflow="fold")
    table.add_column(columns[1], overflow="fold")
    for m in columns[2:]:
        table.add_column(m, justify="right", no_wrap=True, min_width=max(len(m), 6))  # headers never cut
    for row in rows:
        table.add_row(*row)
    if out.is_terminal:
        out.print(table)
    else:  # a pipe or a file gets the table at its full width, never squeezed into 80 columns
        width = table.__rich_measure__(out, out.options.update(width=10_000)).maximum
        Console(highlight=False, width=max(width, 80), file=sys.stdout).print(table)
    out.print(f"results: {output / 'results.json'}", markup=False)
    failed = [r for r in results if r.error]
    if failed:
        err.print(f"[bold red]error:[/bold red] {len(failed)} of {len(results)} runs failed (see above and results.json)")
        raise typer.Exit(1)


@app.command()
def info(
    index_dir: Optional[Path] = IndexOption,
    verify: bool = typer.Option(False, "--verify", help="Also check every file's sha256 and every array value (reads the whole index)."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Describe an index: documents, postings, encoder, size on disk."""
    from lsr.retriever import Retriever

    path = index_dir or default_index()
    retriever = Retriever.load(path)
    m = retriever.manifest
    checked = retriever.verify() if verify else None
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if as_json:
        keys = ("created", "n_docs", "n_live", "nnz", "dim", "index_kind", "encoder", "corpus", "fields")
        doc = {"index": str(path), **{key: m.get(key) for key in keys}, "bytes": size, "verified": checked is not None}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return
    out.print(f"index      {path}", markup=False)
    out.print(f"created    {m['created']}", markup=False)
    live = m.get("n_live", m["n_docs"])
    deleted = f" ({m['n_docs'] - live:,} deleted, kept in the document store until a rebuild)" if live != m["n_docs"] else ""
    out.print(f"documents  {live:,}{deleted}", markup=False)
    out.print(f"postings   {m['nnz']:,} over {m['dim']:,} dimensions ({m['index_kind']} index)", markup=False)
    out.print(f"encoder    {json.dumps(m['encoder'])}", markup=False)
    if "dense" in m:
        out.print(f"dense      {m['dense']['model']} ({m['dense']['dim']} dimensions)", markup=False)
    out.print(f"corpus     {m['corpus']}", markup=False)
    out.print(f"size       {size / 2**20:,.1f} MiB", markup=False)
    if checked is not None:
        out.print(f"verified   {checked} files match their sha256; array values in range", markup=False)


@app.command("teacher-scores")
def teacher_scores(
    dataset: Path = typer.Argument(..., help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)."),
    teachers: list[str] = typer.Option(..., "--teacher", "-t", help="bm25, dense (all-MiniLM-L6-v2), dense:PATH or an lsr model folder; repeat for several."),
    output: Path = typer.Option(..., "--output", "-o", help="The JSONL file (one teacher) or a folder of NAME.jsonl (several)."),
    split: str = typer.Option("train", "--split", help="BEIR qrels split."),
    negatives: int = typer.Option(8, "--negatives", "-n", min=0, help="Hard negatives per query: top bm25 hits that are not judged."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", min=1, help="Only the first N judged queries."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Queries scored per batch, and texts per model batch."),
) -> None:
    """Score each query's positives and bm25 hard negatives with teachers (distillation data)."""
    from lsr.train.teachers import write_teacher_scores

    with _Bars() as bars:
        written = write_teacher_scores(
            dataset, teachers, output, split=split, negatives=negatives,
            max_queries=max_queries, batch_size=batch_size, progress=bars,
        )  # fmt: skip
    for name, path in written.items():
        out.print(f"{name}: {path}", markup=False)


@app.command()
def fuse(
    runs: list[Path] = typer.Argument(..., help="TREC run files to fuse (the first is weighted alpha under interp)."),
    method: Fusion = typer.Option("rrf", "--method", help="rrf (reciprocal rank fusion) or interp (score interpolation)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="interp: weight of the first run; the others share 1 - alpha."),
    norm: Norm = typer.Option("minmax", "--norm", help="interp: per-query score normalisation, minmax, zscore or none."),
    rrf_k: int = typer.Option(60, "-k", "--k", min=0, help="rrf: the constant k in 1 / (k + rank)."),
    depth: int = typer.Option(1000, "--depth", min=1, help="Hits kept per query in the fused run."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the fused run here [default: stdout]."),
    tag: str = typer.Option("", "--tag", help="Run tag (last column) [default: lsr-fuse-METHOD]."),
) -> None:
    """Fuse TREC run files (RRF or score interpolation) into one TREC run."""
    from lsr.formats.runs import load_run, trec_run_lines, write_trec_run
    from lsr.fusion import fuse_runs

    fused = fuse_runs([load_run(r) for r in runs], method=method, alpha=alpha, norm=norm, k=rrf_k, depth=depth)
    tag = tag or f"lsr-fuse-{method}"
    if output is None:
        sys.stdout.writelines(trec_run_lines(fused, tag))
    else:
        write_trec_run(output, fused, tag)
        err.print(f"fused {len(runs)} runs over {len(fused):,} queries into {output}", markup=False)


@app.command()
def serve(
    index_dir: Optional[Path] = IndexOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    exact: bool = typer.Option(False, "--exact", help="Exact top-k even on an approximate (Seismic) index."),
    poll: float = typer.Option(1.0, "--poll", min=0.0, help="Seconds between checks for a rebuilt index (hot swap)."),
    ray_address: Optional[str] = RayOption,
    actors: Optional[int] = ActorsOption,
) -> None:
    """Serve the index over HTTP: POST /search, GET /health, GET /info (OpenAPI at /docs)."""
    from lsr.serve import serve as run_server

    path = index_dir or default_index()
    err.print(f"serving {path} on http://{host}:{port} (docs at /docs)", markup=False)
    run_server(path, host=host, port=port, exact=exact, poll_seconds=poll, ray=ray_address, actors=actors)


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training configuration (TOML; see docs/training.md)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (overrides [output] dir)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Optimiser steps (overrides [trainer] max_steps)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder."),
) -> None:
    """Train a sparse encoder (SPLADE or inference-free); the output folder loads with --model."""
    from lsr.train import Trainer

    overrides: dict = {}
    if output is not None:
        overrides["output"] = {"dir": str(output.absolute())}
    if max_steps is not None:
        overrides["trainer"] = {"max_steps": max_steps}
    with _Bars() as bars:
        first: list[int] = []

        def progress(event: dict) -> None:
            """The trainer's events drawn: a bar for the steps, a line per evaluation."""
            kind = event["event"]
            if kind == "start":
                first.append(event["step"])
                bars("training", event["step"], event["max_steps"], info="")
            elif kind == "step":
                rate = (event["step"] - first[0]) / max(event["elapsed"], 1e-9)
                info = (f"loss {event['loss']:.3f}  reg {event['reg']:.3f}  q {event['query_terms']:.0f} d {event['doc_terms']:.0f} terms"
                        f"  {rate:.2f} step/s")
                bars("training", event["step"], event["max_steps"], info=info)
            elif kind == "eval":
                bars.print(f"step {event['step']}: nDCG@10 {event['ndcg@10']:.4f}, {event['doc_terms']:.1f} terms/doc, "
                           f"{event['query_terms']:.1f} terms/query", markup=False)

        folder = Trainer(config, progress, overrides=overrides).train(resume=resume)
    out.print(f"model saved to {folder} (use it with --model {folder})", markup=False)


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

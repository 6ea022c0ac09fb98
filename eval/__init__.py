"""Evaluation: loaders for qrels/runs/queries, trec_eval-exact metrics, significance tests,
and experiments (`run_experiment`: what `lsr eval` runs, from Python).

Metrics code is NumPy/Numba only; nothing here imports torch.
"""

from lsr.eval.loaders import (
    load_beir,
    load_qrels,
    load_queries,
    load_queries_jsonl,
    load_queries_smart,
    load_queries_tsv,
    load_query_vectors,
    load_run,
    load_topics,
)
from lsr.eval.metrics import DEFAULT_METRICS, Metric, evaluate, evaluate_arrays
from lsr.eval.experiment import results_table, run_experiment
from lsr.eval.significance import compare, paired_t_test, randomization_test

__all__ = [
    "load_beir",
    "load_qrels",
    "load_queries",
    "load_queries_jsonl",
    "load_queries_smart",
    "load_queries_tsv",
    "load_query_vectors",
    "load_run",
    "load_topics",
    "DEFAULT_METRICS",
    "Metric",
    "evaluate",
    "evaluate_arrays",
    "paired_t_test",
    "randomization_test",
    "compare",
    "run_experiment",
    "results_table",
]

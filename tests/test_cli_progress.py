"""The CLI draws the library's progress: one bar helper for `lsr index`, `lsr eval` and `lsr train`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")


def _lsr(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([LSR, *map(str, args)], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


def test_lsr_index_bar_counts_every_document(tmp_path, make_beir):
    beir, docs, _ = make_beir(tmp_path / "beir")
    result = _lsr("index", beir, "--model", "bm25", "--index", tmp_path / "idx", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    bar = [line for line in result.stderr.splitlines() if line.startswith("indexing")]
    assert len(bar) == 1 and "100%" in bar[0] and f"{len(docs)} docs" in bar[0] and "docs/s" in bar[0]


def test_lsr_train_draws_its_steps_and_evaluations(tmp_path, make_beir, data_dir):
    """The trainer's events reach the CLI's bar (they were built but never handed over)."""
    beir, _, _ = make_beir(tmp_path / "beir")
    config = tmp_path / "train.toml"
    config.write_text(
        f'[model]\nbase = "{data_dir.parent / "models" / "splade-tiny"}"\nquery_max_length = 16\ndoc_max_length = 32\n'
        f'[data]\ndataset = "{beir}"\nnegatives = "bm25"\nn_negatives = 1\ncache_dir = "{tmp_path / "neg-cache"}"\n'
        f'[trainer]\nmax_steps = 2\nbatch_size = 2\neval_steps = 2\neval_split = "test"\nthreads = 1\n'
        f'[output]\ndir = "{tmp_path / "out"}"\n'
    )
    result = _lsr("train", config)
    assert result.returncode == 0, result.stderr
    bar = [line for line in result.stderr.splitlines() if line.startswith("training")]
    assert len(bar) == 1 and "100%" in bar[0] and "loss" in bar[0] and "step/s" in bar[0]
    assert [line for line in result.stderr.splitlines() if line.startswith("step 2: nDCG@10 ")]
    assert f"model saved to {tmp_path / 'out'}" in result.stdout

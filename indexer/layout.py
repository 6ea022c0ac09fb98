"""The Seismic index's array layout: the constants that build, search and load checks share,
and the one bundle of arrays the search kernels take.

Postings are i32 document ids grouped by block (`list_block_ptr` → `block_doc_ptr` →
`post_docs`), with each block's quantisation (`block_min`, `block_scale`). Summaries are kept
per group of `GROUP` consecutive blocks of a list (`list_group_ptr` → `group_uniq_ptr`),
component-major: the group's distinct components (`sum_ucomp`, sorted), each one's entry
count - 1 (`sum_ucount`, u8: a component has at most `GROUP` entries in a group), the entry
start of every `CKPT`-th of them (`sum_ckpt`), and per entry `block_in_group | code <<
CODE_SHIFT` (`sum_entry`, u16). The forward index packs a component and its value per word
(`fwd_ptr` → `fwd_words`; see `seismic.pack_words`), a document's words in decreasing
absolute value: its first `HEAD` words are scored first, and the word after them bounds the
rest (`seismic_search._score_docs`).

Documents are numbered inside the index in an order of their own (by their two largest
components, so that similar documents, which share blocks, lie side by side in the forward
index); `doc_ids` maps an index number back to the collection's row, which is what searches
return. Postings, the forward index and the visited bitset use index numbers.

Numba bakes these constants into its on-disk cache: after changing one, delete
`indexer/__pycache__`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LAYOUT = 3  # version of the saved layout; an index of another version must be rebuilt
GROUP = 256  # blocks per summary group: a block's number inside its group fits a byte
CODE_SHIFT = 8  # a summary entry holds the block number in the low byte, the u8 code above
BLOCK_MASK = GROUP - 1
CODE_MAX = 255  # summary values are quantised to u8 codes: min + code * scale, scale = (max - min) / CODE_MAX
CKPT = 16  # sum_ckpt holds the first entry of every CKPT-th distinct summary component
HEAD = 32  # a document's largest words scored before the bound on the others is tried


class SeismicArrays(NamedTuple):
    """The arrays of a Seismic index, in saved-file order; passed to the Numba search kernels
    as one argument (a tuple of arrays is a Numba type: fields are read without overhead)."""

    fwd_ptr: np.ndarray
    fwd_words: np.ndarray
    post_docs: np.ndarray
    list_block_ptr: np.ndarray
    block_doc_ptr: np.ndarray
    block_min: np.ndarray
    block_scale: np.ndarray
    list_group_ptr: np.ndarray
    group_uniq_ptr: np.ndarray
    sum_ucomp: np.ndarray
    sum_ucount: np.ndarray
    sum_ckpt: np.ndarray
    sum_entry: np.ndarray
    doc_ids: np.ndarray


# the types each saved array may have (the wider ones for large dimensions or collections)
DTYPES = {
    "fwd_ptr": ("int64",), "fwd_words": ("uint32", "uint64"), "post_docs": ("int32",),
    "list_block_ptr": ("int64",), "block_doc_ptr": ("int64",), "block_min": ("float32",),
    "block_scale": ("float32",), "list_group_ptr": ("int64",), "group_uniq_ptr": ("int64",),
    "sum_ucomp": ("uint16", "int32"), "sum_ucount": ("uint8",), "sum_ckpt": ("uint32", "int64"),
    "sum_entry": ("uint16",), "doc_ids": ("int32",),
}  # fmt: skip

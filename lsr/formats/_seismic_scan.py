"""The one Numba kernel of the formats: record lengths of a Seismic binary file (a sequential
scan), kept apart so that `lsr.formats` imports without Numba."""

import numpy as np

from lsr.cache import use_numba_cache

use_numba_cache()  # before the kernel is decorated: Numba fixes its cache folder then
from numba import njit  # noqa: E402


@njit(cache=True)
def seismic_offsets(buf):
    """(lengths of the vectors, end position) of the u32 words `buf`; end -1 when they overrun."""
    n = buf[0]
    lens = np.empty(n, dtype=np.int64)
    pos = 1
    total = buf.shape[0]
    for i in range(n):
        if pos >= total:
            return lens, -1
        m = buf[pos]
        lens[i] = m
        pos += 1 + 2 * m
    return lens, pos

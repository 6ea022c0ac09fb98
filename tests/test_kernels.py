"""Tests for lsr.kernels: the Triton kernels (interpreter on CPU), the chunked CPU path and
the dispatcher, all against the naive reference that materialises the logits."""

from __future__ import annotations

import os

# Must be set before Triton builds any kernel: run the Triton kernels with the CPU interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# CI installs Triton: if it is missing, this module must fail loudly rather than skip.
import triton  # noqa: E402,F401

from lsr.kernels import (  # noqa: E402
    splade_max,
    splade_max_blocked,
    splade_max_chunked,
    splade_max_reference,
    splade_max_triton,
)

ON_CUDA = torch.cuda.is_available()
# The Triton tests run compiled on a GPU when TRITON_INTERPRET=0 (benchmarks/gpu_checks.sh),
# else in the interpreter on CPU tensors.
TRITON_DEVICE = "cuda" if ON_CUDA and os.environ["TRITON_INTERPRET"] != "1" else "cpu"


def _inputs(B, S, D, V, *, dtype=torch.float32, bias=True, seed=0, scale=1.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, S, D, generator=g) * scale
    w = torch.randn(V, D, generator=g) / D**0.5
    b = torch.randn(V, generator=g) * 0.5 if bias else None
    mask = (torch.rand(B, S, generator=g) < 0.7).long()
    mask[:, 0] = 1
    if B > 1:
        mask[-1] = 0  # an all-padding document
    h, w = h.to(device, dtype), w.to(device, dtype)
    b = b.to(device, dtype) if b is not None else None
    return h, w, b, mask.to(device)


def _grads(fn, h, w, b, mask, upstream, **kw):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (h, w, b)]
    out = fn(leaves[0], leaves[1], leaves[2], mask, **kw)
    req = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, req, upstream)
    return out.detach(), list(grads)


def _assert_close(a, b, rtol, atol=None, msg=""):
    a, b = a.double(), b.double()
    scale = b.abs().max().clamp_min(1e-12)
    atol = rtol * scale if atol is None else atol
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=msg or None)


# ----------------------------------------------------------------------------- import


def test_import_does_not_import_triton():
    code = "import sys, lsr.kernels; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bad_arguments():
    h, w, b, m = _inputs(2, 3, 4, 5)
    with pytest.raises(ValueError):
        splade_max(h, w, b, m, activation="gelu")
    with pytest.raises(ValueError):
        splade_max(h, w, b, m, pooling="mean")
    with pytest.raises(ValueError):
        splade_max(h, w[:, :3], b, m)
    with pytest.raises(ValueError):
        splade_max(h, w, b, m[:, :2])


# ----------------------------------------------------------------------------- Triton (interpreter)


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_triton_matches_reference_fp32(activation, with_bias):
    # S=21 > BLOCK_S (16), D=40 > BLOCK_D (16), V=77 > BLOCK_V (32): ragged edges everywhere.
    h, w, b, m = _inputs(3, 21, 40, 77, bias=with_bias, seed=1, device=TRITON_DEVICE)
    up = torch.randn(3, 77, generator=torch.Generator().manual_seed(2)).to(TRITON_DEVICE)
    out_t, g_t = _grads(splade_max_triton, h, w, b, m, up, activation=activation)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up, activation=activation)
    assert out_t.dtype == torch.float32
    _assert_close(out_t, out_r, 1e-5)
    assert torch.all(out_t[-1] == 0)  # all-padding row
    for name, a, r in zip(["hidden", "weight", "bias"], g_t, g_r):
        _assert_close(a, r, 1e-5, msg=f"d{name}")


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_triton_small_scores_keep_relative_precision(activation):
    """Tiny positive maxima (1e-7..1e-3): log1p must stay accurate element by element, where
    log(1 + m) in float32 loses most digits."""
    h, w, b, m = _inputs(2, 5, 16, 40, bias=False, seed=6, scale=1e-4, device=TRITON_DEVICE)
    out_t = splade_max_triton(h, w, b, m, activation=activation)
    out_r = splade_max_reference(h.double(), w.double(), None, m, activation=activation)
    live = out_r > 0
    assert live.sum() > 20 and out_r[live].max() < 1e-3
    torch.testing.assert_close(out_t[live].double(), out_r[live], rtol=1e-5, atol=0)


def test_triton_ties_go_to_lowest_position():
    h, w, b, m = _inputs(2, 20, 24, 40, seed=3, device=TRITON_DEVICE)
    m[0] = 1
    with torch.no_grad():
        h[0, 7] = h[0, 2]
        h[0, 18] = h[0, 2]  # crosses a BLOCK_S boundary
        h[0, 11] = 0.0  # logits of exactly bias: ties with other zero rows
        h[0, 12] = 0.0
    up = torch.ones(2, 40, device=TRITON_DEVICE)
    out_t, g_t = _grads(splade_max_triton, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_t, out_r, 1e-5)
    for a, r in zip(g_t, g_r):
        _assert_close(a, r, 1e-5)
    dh = g_t[0][0]
    assert dh[7].abs().sum() == 0 and dh[18].abs().sum() == 0 and dh[12].abs().sum() == 0
    assert dh[2].abs().sum() > 0


def test_triton_all_masked_and_single_position():
    h, w, b, m = _inputs(3, 1, 16, 33, seed=4, device=TRITON_DEVICE)
    m[:] = torch.tensor([[1], [0], [1]], device=TRITON_DEVICE)
    up = torch.randn(3, 33).to(TRITON_DEVICE)
    out_t, g_t = _grads(splade_max_triton, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_t, out_r, 1e-5)
    assert torch.all(out_t[1] == 0) and torch.all(g_t[0][1] == 0)
    for a, r in zip(g_t, g_r):
        _assert_close(a, r, 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_inputs(dtype):
    h, w, b, m = _inputs(2, 18, 32, 50, dtype=dtype, seed=5, device=TRITON_DEVICE)
    up = torch.randn(2, 50, generator=torch.Generator().manual_seed(6)).to(TRITON_DEVICE)
    out_t, g_t = _grads(splade_max_triton, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    assert out_t.dtype == torch.float32
    _assert_close(out_t, out_r, 1e-5)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    for a, r, t in zip(g_t, g_r, (h, w, b)):
        assert a.dtype == t.dtype
        _assert_close(a, r, tol)


def test_triton_rejects_sum_pooling():
    h, w, b, m = _inputs(2, 3, 16, 8, device=TRITON_DEVICE)
    with pytest.raises(NotImplementedError):
        splade_max_triton(h, w, b, m, pooling="sum")


# ----------------------------------------------------------------------------- chunked CPU path


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_chunked_gradcheck_float64(pooling, activation):
    h, w, b, m = _inputs(3, 4, 3, 7, dtype=torch.float64, seed=7, scale=2.0)
    m[0] = torch.tensor([1, 0, 1, 1])
    args = [t.requires_grad_(True) for t in (h, w, b)]
    fn = lambda h, w, b: splade_max_chunked(h, w, b, m, activation, pooling=pooling, tile=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
@pytest.mark.parametrize("tile", [None, 7])
def test_chunked_matches_reference_small(pooling, activation, tile):
    h, w, b, m = _inputs(4, 9, 12, 30, seed=8)
    up = torch.randn(4, 30, generator=torch.Generator().manual_seed(9))
    out_c, g_c = _grads(splade_max_chunked, h, w, b, m, up, activation=activation, pooling=pooling, tile=tile)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up, activation=activation, pooling=pooling)
    _assert_close(out_c, out_r, 1e-5)
    for a, r in zip(g_c, g_r):
        _assert_close(a, r, 1e-5)


def test_chunked_inference_pads_ragged_documents_with_duplicates():
    """Without gradients, nearly equal lengths (left and right padding alike) are padded with
    copies of each document's own rows: the maxima are unchanged, bit for bit."""
    from lsr.kernels import chunked

    g = torch.Generator().manual_seed(11)
    h = torch.randn(7, 40, 32, generator=g)
    w = torch.randn(500, 32, generator=g)
    b = torch.randn(500, generator=g)
    m = torch.zeros(7, 40, dtype=torch.long)
    for i, length in enumerate([40, 39, 38, 38, 36, 35, 33]):
        m[i, 40 - length :] = 1 if i % 2 else 0
        if i % 2 == 0:
            m[i, :length] = 1
    assert max(m.sum(1)) * 7 <= (1 + chunked._PAD_SLACK) * m.sum()  # the padded path is taken
    with torch.inference_mode():
        for activation in ("relu", "log1p_relu"):
            got = splade_max_chunked(h, w, b, m, activation=activation, tile=128)
            want = splade_max_reference(h, w, b, m, activation=activation)
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("uniform", [True, False])
def test_chunked_minilm_head_shape(uniform):
    """MiniLM-sized head: V=30,522, D=384, a few documents; forward and backward."""
    B, S, D, V = 3, 12, 384, 30522
    h, w, b, m = _inputs(B, S, D, V, seed=10, scale=3.0)
    if uniform:
        m[:] = 1
    up = torch.rand(B, V, generator=torch.Generator().manual_seed(11))
    out_c, g_c = _grads(splade_max_chunked, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_c, out_r, 1e-5)
    for name, a, r in zip(["hidden", "weight", "bias"], g_c, g_r):
        _assert_close(a, r, 1e-5, msg=f"d{name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_chunked_half_inputs(dtype, pooling):
    h, w, b, m = _inputs(3, 10, 32, 45, dtype=dtype, seed=12)
    up = torch.randn(3, 45, generator=torch.Generator().manual_seed(13))
    out_c, g_c = _grads(splade_max_chunked, h, w, b, m, up, pooling=pooling)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up, pooling=pooling)
    assert out_c.dtype == torch.float32
    _assert_close(out_c, out_r, 1e-5)
    for a, r, t in zip(g_c, g_r, (h, w, b)):
        assert a.dtype == t.dtype
        _assert_close(a, r, 1e-2)


def test_chunked_no_grad_equals_grad_path():
    h, w, b, m = _inputs(3, 8, 16, 40, seed=14)
    with torch.inference_mode():
        fast = splade_max_chunked(h, w, b, m)
    slow = splade_max_chunked(h.requires_grad_(True), w, b, m)
    assert slow.requires_grad and not fast.requires_grad
    assert torch.equal(fast, slow.detach())


def test_chunked_ties_go_to_lowest_position():
    h, w, b, m = _inputs(2, 9, 8, 20, seed=15)
    m[0] = torch.tensor([0, 1, 1, 1, 1, 0, 1, 1, 1])
    with torch.no_grad():
        h[0, 4] = h[0, 2]
        h[0, 8] = h[0, 2]
        h[0, 5] = h[0, 1] + 10  # masked: must never win
    up = torch.ones(2, 20)
    _, g_c = _grads(splade_max_chunked, h, w, b, m, up, tile=6)
    _, g_r = _grads(splade_max_reference, h, w, b, m, up)
    for a, r in zip(g_c, g_r):
        _assert_close(a, r, 1e-5)
    dh = g_c[0][0]
    assert dh[4].abs().sum() == 0 and dh[8].abs().sum() == 0 and dh[5].abs().sum() == 0


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4),
    S=st.integers(1, 7),
    D=st.integers(1, 9),
    V=st.integers(1, 23),
    tile=st.integers(1, 10),
    pooling=st.sampled_from(["max", "sum"]),
    seed=st.integers(0, 1000),
)
def test_chunked_property(B, S, D, V, tile, pooling, seed):
    h, w, b, m = _inputs(B, S, D, V, seed=seed)
    up = torch.randn(B, V, generator=torch.Generator().manual_seed(seed))
    out_c, g_c = _grads(splade_max_chunked, h, w, b, m, up, pooling=pooling, tile=tile)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up, pooling=pooling)
    _assert_close(out_c, out_r, 1e-5, atol=1e-6)
    for a, r in zip(g_c, g_r):
        _assert_close(a, r, 1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- blocked CPU path

# Small tiles so that a few positions and vocabulary entries already span several blocks and
# tiles; workers=2 shares the tiles between two Python threads, 0 runs them on this thread.
_SMALL = dict(rows=8, tile_elems=40)


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_blocked_gradcheck_float64(activation):
    h, w, b, m = _inputs(3, 4, 3, 7, dtype=torch.float64, seed=7, scale=2.0)
    m[0] = torch.tensor([1, 0, 1, 1])
    args = [t.requires_grad_(True) for t in (h, w, b)]
    fn = lambda h, w, b: splade_max_blocked(h, w, b, m, activation, rows=3, tile_elems=6)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_blocked_matches_reference(activation, workers, with_bias):
    """Ragged, unsorted lengths (padding inside blocks), an all-padding document, forward and
    all gradients."""
    h, w, b, m = _inputs(6, 11, 12, 97, bias=with_bias, seed=21)
    m[1, 3:] = 0  # a short document between long ones
    up = torch.randn(6, 97, generator=torch.Generator().manual_seed(22))
    out_k, g_k = _grads(splade_max_blocked, h, w, b, m, up, activation=activation, workers=workers, **_SMALL)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up, activation=activation)
    _assert_close(out_k, out_r, 1e-5)
    assert torch.all(out_k[-1] == 0)  # all padding
    for a, r in zip(g_k, g_r):
        _assert_close(a, r, 1e-5)
    with torch.inference_mode():
        fast = splade_max_blocked(h, w, b, m, activation, workers=workers, **_SMALL)
    assert torch.equal(fast, out_k)


def test_blocked_ties_go_to_lowest_position():
    """Equal rows inside one document (across blocks of padded rows): the gradient goes to the
    first; a masked row with a larger logit never wins."""
    h, w, b, m = _inputs(3, 9, 8, 20, seed=15)
    m[0] = torch.tensor([0, 1, 1, 1, 1, 0, 1, 1, 1])
    m[1] = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0])
    with torch.no_grad():
        h[0, 4] = h[0, 2]
        h[0, 8] = h[0, 2]
        h[0, 5] = h[0, 1] + 10  # masked: must never win
        h[1, 4] = h[1, 3]  # the last real row, duplicated by the block padding
    up = torch.ones(3, 20)
    _, g_k = _grads(splade_max_blocked, h, w, b, m, up, **_SMALL)
    _, g_r = _grads(splade_max_reference, h, w, b, m, up)
    for a, r in zip(g_k, g_r):
        _assert_close(a, r, 1e-5)
    dh = g_k[0]
    assert dh[0, 4].abs().sum() == 0 and dh[0, 8].abs().sum() == 0 and dh[0, 5].abs().sum() == 0
    assert dh[1, 4].abs().sum() == 0 and dh[1, 3].abs().sum() > 0


def test_blocked_small_maxima_keep_relative_precision():
    h, w, _, m = _inputs(2, 6, 16, 50, bias=False, seed=23, scale=1e-6)
    with torch.inference_mode():
        got = splade_max_blocked(h, w, None, m, **_SMALL)
    want = splade_max_reference(h, w, None, m)
    nz = want > 0
    assert nz.any()
    assert ((got[nz] - want[nz]).abs() / want[nz]).max() <= 1e-5


def test_blocked_splade_tiny_head_shape():
    """splade-tiny's head (V=30,522, D=128) with the default tiles: forward and backward."""
    B, S, D, V = 3, 40, 128, 30522
    h, w, b, m = _inputs(B, S, D, V, seed=24, scale=3.0)
    up = torch.rand(B, V, generator=torch.Generator().manual_seed(25))
    out_k, g_k = _grads(splade_max_blocked, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_k, out_r, 1e-5)
    for name, a, r in zip(["hidden", "weight", "bias"], g_k, g_r):
        _assert_close(a, r, 1e-5, msg=f"d{name}")


@pytest.mark.parametrize("D", [16, 384])
@pytest.mark.parametrize("workers", [0, 2])
def test_blocked_bf16_tiles_round_the_max_once(D, workers):
    """bf16 hidden and weight without autograd: bf16 logits tiles, whose max is the fp32 max
    rounded to bf16 (≤ 2^-8 of the raw logit), bias and activation in fp32; ragged lengths,
    an all-padding document, several blocks and tiles."""
    h, w, b, m = _inputs(7, 13, D, 301, dtype=torch.bfloat16, seed=26, scale=2.0)
    b = b.float()
    m[2, 4:] = 0
    with torch.inference_mode():
        got = splade_max_blocked(h, w, b, m, workers=workers, rows=16, tile_elems=16 * 64)
    want = splade_max_reference(h.float(), w.float(), b, m)
    raw = (h.float() @ w.float().T).masked_fill(m[:, :, None] == 0, float("-inf")).amax(1).abs()
    assert got.dtype == torch.float32 and torch.all(got[-1] == 0)
    assert torch.all((got - want).abs() <= 2.0**-8 * raw + 1e-6)
    assert ((got - want).abs() > 1e-5).any()  # the tiles really are bf16 (fp32 would be exact)


def test_blocked_bf16_with_autograd_stays_exact():
    """With gradients the bf16 inputs are upcast: fp32 tiles, exact to the reference."""
    h, w, b, m = _inputs(3, 10, 32, 45, dtype=torch.bfloat16, seed=27)
    up = torch.randn(3, 45, generator=torch.Generator().manual_seed(28))
    out_k, g_k = _grads(splade_max_blocked, h, w, b, m, up)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_k, out_r, 1e-5)
    for a, r, t in zip(g_k, g_r, (h, w, b)):
        assert a.dtype == t.dtype
        _assert_close(a, r, 1e-2)


def test_blocked_rejects_sum_pooling():
    h, w, b, m = _inputs(2, 3, 4, 5)
    with pytest.raises(ValueError):
        splade_max_blocked(h, w, b, m, pooling="sum")


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4),
    S=st.integers(1, 7),
    D=st.integers(1, 9),
    V=st.integers(1, 23),
    rows=st.integers(1, 9),
    tile_elems=st.integers(1, 60),
    seed=st.integers(0, 1000),
)
def test_blocked_property(B, S, D, V, rows, tile_elems, seed):
    h, w, b, m = _inputs(B, S, D, V, seed=seed)
    up = torch.randn(B, V, generator=torch.Generator().manual_seed(seed))
    out_k, g_k = _grads(splade_max_blocked, h, w, b, m, up, rows=rows, tile_elems=tile_elems)
    out_r, g_r = _grads(splade_max_reference, h, w, b, m, up)
    _assert_close(out_k, out_r, 1e-5, atol=1e-6)
    for a, r in zip(g_k, g_r):
        _assert_close(a, r, 1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- dispatcher / semantics


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_dispatcher_cpu_uses_chunked(pooling, monkeypatch):
    import lsr.kernels as K

    def boom(*a, **k):
        raise AssertionError("Triton path used for CPU tensors")

    monkeypatch.setattr(K, "splade_max_triton", boom)
    h, w, b, m = _inputs(2, 5, 8, 13, seed=16)
    out = K.splade_max(h, w, b, m, pooling=pooling)
    _assert_close(out, splade_max_reference(h, w, b, m, pooling=pooling), 1e-5)


def test_dispatcher_cpu_picks_blocked_for_max_pooling(monkeypatch):
    import lsr.kernels as K

    used = []
    monkeypatch.setattr(K.screened, "native_bf16", lambda: False)  # the screened head: tests/test_screened.py
    monkeypatch.setattr(K, "splade_max_blocked", lambda *a, **k: used.append("blocked") or splade_max_reference(*a, **k))
    monkeypatch.setattr(K, "splade_max_chunked", lambda *a, **k: used.append("chunked") or splade_max_reference(*a, **k))
    for D in (8, 384, 1024):
        h, w, b, m = _inputs(2, 3, D, 5, seed=D)
        K.splade_max(h, w, b, m)
    K.splade_max(h, w, b, m, pooling="sum")
    assert used == ["blocked", "blocked", "blocked", "chunked"]


def test_mask_none_means_all_tokens():
    h, w, b, _ = _inputs(2, 4, 8, 10)
    ones = torch.ones(2, 4, dtype=torch.long)
    assert torch.allclose(splade_max(h, w, b, None), splade_max(h, w, b, ones))


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_matches_sentence_transformers_splade_pooling(pooling, activation):
    """Same numbers as sentence-transformers' SpladePooling over materialised logits."""
    st_mod = pytest.importorskip("sentence_transformers.sparse_encoder.modules")
    h, w, b, m = _inputs(3, 6, 16, 25, seed=17, scale=2.0)
    logits = h @ w.T + b
    pool = st_mod.SpladePooling(pooling_strategy=pooling, activation_function=activation).eval()
    ref = pool({"token_embeddings": logits.clone(), "attention_mask": m})["sentence_embedding"]
    ours = splade_max(h, w, b, m, activation, pooling=pooling)
    _assert_close(ours, ref, 1e-5)

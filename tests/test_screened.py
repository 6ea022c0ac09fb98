"""The screened CPU head (lsr.kernels.screened): exact to the fp32 reference, its certified
zeros really zero (adversarial near-threshold logits included), and the dispatch rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lsr.kernels as K
from lsr.kernels import screened, splade_max_blocked, splade_max_reference, splade_max_screened

SPLADE_TINY = Path(__file__).resolve().parents[2] / "shared" / "models" / "splade-tiny"
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"


def _inputs(B, S, D, V, *, seed=0, scale=1.0, bias=True, shift=0.0):
    """Random head inputs: ragged lengths, the last document all padding; `shift` lowers the
    bias so that only a few terms per document are non-zero, as in SPLADE."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, S, D, generator=g) * scale
    w = torch.randn(V, D, generator=g) / D**0.5
    b = torch.randn(V, generator=g) * 0.5 - shift if bias else None
    mask = (torch.rand(B, S, generator=g) < 0.7).long()
    mask[:, 0] = 1
    if B > 1:
        mask[-1] = 0
    return h, w, b, mask


def _screened(h, w, b, m, activation="relu", **kw):
    with torch.inference_mode():
        return splade_max_screened(h, w, b, m, activation, **kw)


@pytest.mark.parametrize("D", [1, 7, 64, 384])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("workers", [0, 2])
def test_matches_reference(D, activation, with_bias, workers):
    """Several hidden sizes, ragged lengths and an all-padding document; sparse (shifted bias,
    ~5% non-zero) and dense outputs; small tiles and the rescoring's column chunks."""
    for shift, scale in ((0.0, 1.0), (2.5, 3.0)):
        h, w, b, m = _inputs(5, 13, D, 301, seed=D, scale=scale, bias=with_bias, shift=shift)
        got = _screened(h, w, b, m, activation, workers=workers, rows=16, tile_elems=16 * 64)
        want = splade_max_reference(h, w, b, m, activation)
        assert got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-5
        assert torch.all(got[-1] == 0)


def test_rescoring_in_column_chunks(monkeypatch):
    """More candidates than one rescoring matmul takes: the columns go in several chunks."""
    monkeypatch.setattr(screened, "_RESCORE_COLS", 7)
    h, w, b, m = _inputs(3, 9, 16, 200, seed=3)
    assert (_screened(h, w, b, m) - splade_max_reference(h, w, b, m)).abs().max() <= 1e-5


def _near_threshold(D, seed, scale=4.0):
    """Inputs whose max logits sit within ±1e-3 of 0 for every term of document 0 (the bias
    cancels them), far closer than bf16's error at this scale (~1e-2)."""
    h, w, _, m = _inputs(3, 20, D, 2000, seed=seed, scale=scale, bias=False)
    m[-1] = 1  # no padding-only document here: every document has near-threshold terms
    raw = (h @ w.T).masked_fill(m[:, :, None] == 0, float("-inf")).amax(1)  # [B, V]
    jitter = (torch.rand(2000, generator=torch.Generator().manual_seed(seed)) - 0.5) * 2e-3
    return h, w, -raw[0] + jitter, m


@pytest.mark.parametrize("D", [32, 384])
def test_adversarial_near_threshold(D):
    h, w, b, m = _near_threshold(D, seed=D)
    want = splade_max_reference(h, w, b, m)
    assert ((want[0] > 1e-5).sum() > 500) and ((want[0] == 0).sum() > 500)  # both sides populated
    assert (_screened(h, w, b, m) - want).abs().max() <= 1e-5


def test_adversarial_fails_without_the_bound(monkeypatch):
    """The test above has teeth: with the error terms dropped (safety factor 0) the bf16
    screen certifies non-zero terms as zero and the result is wrong."""
    h, w, b, m = _near_threshold(384, seed=384)
    monkeypatch.setattr(screened, "SAFETY", 0.0)
    assert (_screened(h, w, b, m) - splade_max_reference(h, w, b, m)).abs().max() > 1e-5


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 4),
    S=st.integers(1, 9),
    D=st.integers(1, 48),
    V=st.integers(1, 80),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    near=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_certified_zeros_are_zero(B, S, D, V, scale, near, seed):
    """No term outside the candidates has a reference value above 1e-5 (random shapes and
    scales; `near`: the bias puts document 0's max logits within ±1e-3 of 0)."""
    h, w, b, m = _inputs(B, S, D, V, seed=seed, scale=scale)
    if near:
        raw = (h @ w.T).masked_fill(m[:, :, None] == 0, float("-inf")).amax(1)[0]
        b = -raw + (torch.rand(V, generator=torch.Generator().manual_seed(seed)) - 0.5) * 2e-3
    with torch.inference_mode():
        _, _, cand = screened.screen(h, w, b, m != 0, rows=5, tile_elems=40)
    want = splade_max_reference(h, w, b, m)
    assert not torch.any((want > 1e-5) & ~cand)
    # the candidates' values: an fp32 sum in another order, whose rounding (and its
    # cancellation against a bias of the same size) scales with the logits
    logits = (h @ w.T).abs().max().item()
    assert (_screened(h, w, b, m, rows=5, tile_elems=40) - want).abs().max() <= 1e-5 * max(1.0, logits)


def test_non_finite_inputs_take_the_plain_path():
    h, w, b, m = _inputs(2, 5, 8, 30, seed=5)
    h[0, 0, 0] = float("inf")
    with torch.inference_mode():
        want = splade_max_blocked(h, w, b, m)
    torch.testing.assert_close(_screened(h, w, b, m), want, equal_nan=True)


def test_rejects_gradients_and_other_dtypes():
    h, w, b, m = _inputs(2, 3, 4, 5)
    with pytest.raises(ValueError):
        splade_max_screened(h.requires_grad_(True), w, b, m)
    with pytest.raises(ValueError):
        _screened(h.double(), w.double(), b.double(), m)
    with pytest.raises(ValueError):
        _screened(h, w, b, m, pooling="sum")


# ----------------------------------------------------------------------------- dispatch


@pytest.fixture
def used(monkeypatch):
    """Which CPU head `splade_max` picked, call by call (each still computes the result)."""
    calls: list[str] = []
    for name in ("splade_max_screened", "splade_max_blocked"):
        real = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _n=name, _f=real, **k: calls.append(_n[11:]) or _f(*a, **k))
    return calls


def test_dispatch(used, monkeypatch):
    monkeypatch.setattr(screened, "native_bf16", lambda: True)
    monkeypatch.delenv("LSR_SCREEN", raising=False)
    h, w, b, m = _inputs(2, 4, 16, 40, seed=9)
    want = splade_max_reference(h, w, b, m)
    with torch.inference_mode():
        assert (K.splade_max(h, w, b, m) - want).abs().max() <= 1e-5
        K.splade_max(h, w, b, m, screen=False)
        K.splade_max(h.bfloat16(), w.bfloat16(), b, m)  # bf16 inputs: the bf16 tiles, not screening
        monkeypatch.setenv("LSR_SCREEN", "0")
        K.splade_max(h, w, b, m)
        K.splade_max(h, w, b, m, screen=True)  # the argument wins over the environment
    monkeypatch.delenv("LSR_SCREEN")
    out = K.splade_max(h, w.requires_grad_(True), b, m)  # gradient needed
    out.sum().backward()
    assert w.grad is not None
    assert used == ["screened", "blocked", "blocked", "blocked", "screened", "blocked"]


def test_dispatch_without_native_bf16(used, monkeypatch):
    """Where bf16 is emulated (no AVX512-BF16 / AMX) screening would lose: the plain path."""
    monkeypatch.setattr(screened, "native_bf16", lambda: False)
    h, w, b, m = _inputs(2, 4, 16, 40, seed=10)
    with torch.inference_mode():
        K.splade_max(h, w, b, m)
    assert used == ["blocked"]


def test_native_bf16_probe_reads_cpu_flags():
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    assert screened.native_bf16() == ("avx512_bf16" in flags.split() or "amx_bf16" in flags.split())


def test_splade_tiny_matches_sentence_transformers_through_the_screened_head(used, monkeypatch):
    """The real splade-tiny on SciFact documents, lsr (screened head: the probe is forced on, so
    the check runs on any CPU) against sentence-transformers: within 1e-5."""
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder

    monkeypatch.setattr(screened, "native_bf16", lambda: True)
    monkeypatch.delenv("LSR_SCREEN", raising=False)
    with open(SCIFACT, encoding="utf-8") as f:
        docs = [d["title"] + " " + d["text"] for d in map(json.loads, (next(f) for _ in range(12)))]
    ours = load_encoder(str(SPLADE_TINY), device="cpu").encode_documents(docs, batch_size=4, max_length=256)
    st_model = SparseEncoder(str(SPLADE_TINY), device="cpu")
    st_model.max_seq_length = 256
    ref = st_model.encode_document(docs, batch_size=4, convert_to_tensor=True).coalesce().to_dense().numpy()
    assert used and set(used) == {"screened"}
    a = ours.to_dense()
    assert np.abs(a - ref).max() <= 1e-5
    assert np.array_equal(a != 0, ref != 0)


def test_bf16_weight_cache_follows_the_weight():
    """The cached bf16 copy is reused for the same tensor, renewed after an in-place update
    and never served for another tensor (even one of the same shape)."""
    h, w, b, m = _inputs(2, 6, 16, 50, seed=11)
    first = screened._bf16_weight(w)[0]
    assert screened._bf16_weight(w)[0] is first
    with torch.no_grad():
        w.mul_(2.0)
    assert torch.equal(screened._bf16_weight(w)[0], w.bfloat16())
    other = torch.randn_like(w)
    assert torch.equal(screened._bf16_weight(other)[0], other.bfloat16())
    for _ in range(3):  # fresh tensors, possibly at a freed address: each still exact
        h, w, b, m = _inputs(2, 6, 16, 50, seed=12 + _, shift=1.0)
        assert (_screened(h, w, b, m) - splade_max_reference(h, w, b, m)).abs().max() <= 1e-5


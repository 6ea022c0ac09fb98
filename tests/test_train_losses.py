"""Training losses and regularisers against hand-written references on small tensors."""

import math

import pytest

torch = pytest.importorskip("torch")

from lsr.train import losses, regularizers as R  # noqa: E402


def _data(seed=0, B=3, C=3, V=7):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, V, generator=g) * (torch.rand(B, V, generator=g) > 0.4)
    d = torch.rand(B, C, V, generator=g) * (torch.rand(B, C, V, generator=g) > 0.4)
    return q.double(), d.double()


def _dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def _xent(logits, target):
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(x - m) for x in logits)))


@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_info_nce_matches_reference(in_batch, temperature):
    q, d = _data()
    B, C, _ = d.shape
    total = 0.0
    for b in range(B):
        if in_batch:
            logits = [_dot(q[b], d[i, c]) / temperature for i in range(B) for c in range(C)]
            target = b * C
        else:
            logits = [_dot(q[b], d[b, c]) / temperature for c in range(C)]
            target = 0
        total += _xent(logits, target)
    got = losses.info_nce(q, d, temperature=temperature, in_batch=in_batch)
    assert float(got) == pytest.approx(total / B, rel=1e-9)


def test_margin_mse_matches_reference():
    s = torch.tensor([[5.0, 3.0, 1.0], [2.0, 4.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.5, 0.0], [3.0, 1.0, 2.5]], dtype=torch.float64)
    pairs = [((s[b, 0] - s[b, c]) - (t[b, 0] - t[b, c])) ** 2 for b in range(2) for c in (1, 2)]
    assert float(losses.margin_mse(s, t)) == pytest.approx(float(sum(pairs)) / 4)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_distill_matches_reference(temperature):
    s = [[5.0, 3.0, 1.0], [2.0, 4.0, 0.0]]
    t = [[1.0, 0.5, 0.0], [3.0, 1.0, 2.5]]
    ref = 0.0
    for sb, tb in zip(s, t):
        zs = sum(math.exp(x / temperature) for x in sb)
        zt = sum(math.exp(x / temperature) for x in tb)
        ps = [math.exp(x / temperature) / zs for x in sb]
        pt = [math.exp(x / temperature) / zt for x in tb]
        ref += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    ref = ref / 2 * temperature**2
    got = losses.kl_distill(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), temperature)
    assert float(got) == pytest.approx(ref, rel=1e-9)
    assert float(losses.kl_distill(torch.tensor(t), torch.tensor(t), temperature)) == pytest.approx(0.0, abs=1e-6)


def test_flops_l1_idf_flops_match_reference():
    w = torch.tensor([[0.0, 2.0, 1.0], [4.0, 0.0, 3.0]], dtype=torch.float64)
    idf = torch.tensor([2.0, 0.5, 4.0], dtype=torch.float64)
    means = [(0 + 4) / 2, (2 + 0) / 2, (1 + 3) / 2]
    assert float(R.flops(w)) == pytest.approx(sum(m * m for m in means))
    assert float(R.l1(w)) == pytest.approx(((2 + 1) + (4 + 3)) / 2)
    assert float(R.idf_flops(w, idf)) == pytest.approx(sum(m * m / i for m, i in zip(means, [2.0, 0.5, 4.0])))


def test_warmup_is_quadratic_and_separate_lambdas():
    assert R.warmup(2.0, 0, 10) == 0.0
    assert R.warmup(2.0, 5, 10) == pytest.approx(0.5)
    assert R.warmup(2.0, 20, 10) == 2.0
    assert R.warmup(2.0, 0, 0) == 2.0
    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
    reg = R.Regularizer("flops", lambda_q=10.0, lambda_d=1.0, warmup_steps=4)
    assert float(reg(q, d, 2)) == pytest.approx(0.25 * (1.0 * 4.0 + 10.0 * 1.0))
    assert float(reg(None, d, 4)) == pytest.approx(4.0)
    assert float(R.Regularizer("none")(q, d, 4)) == 0.0


def test_active_terms_and_flops_metric():
    q = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    d = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert R.active_terms(q) == 1.5
    assert R.active_terms(d) == pytest.approx(4 / 3)
    # P(q≠0) = [.5, 0, 1], P(d≠0) = [2/3, 1/3, 1/3]
    assert R.flops_metric(q, d) == pytest.approx(0.5 * 2 / 3 + 1 / 3)

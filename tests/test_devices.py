"""A 250,002-entry vocabulary through the decoder training model on every device present:
the CPU always, a CUDA GPU (the Triton head) when there is one. The fused head's weights and
gradients equal autograd through the model's full `[B, S, V]` logits."""

from __future__ import annotations

import pytest
import torch

from test_decoder import build_causal_lm

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TEXTS = ["cats purr", "dogs bark at the moon and the sun is red", "green tree by the river in the rain"]


def _naive_weights(model, texts, max_length: int = 64) -> torch.Tensor:
    """log1p(relu) of the full logits, max over the echo mask's positions (differentiable)."""
    inputs, pool = model.echo.tensors(texts, max_length, model.device)
    logits = model.lm(**inputs).logits.float()
    return (torch.log1p(torch.relu(logits)) * pool[..., None]).amax(dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_a_250k_head_encodes_and_trains_like_full_logits(tmp_path, device):
    from lsr.train.models import DecoderSpladeModel

    folder = build_causal_lm(tmp_path / "qwen", "qwen2", vocab=250_002)
    model = DecoderSpladeModel(folder).to(device)
    grads = []
    for encode in (lambda: model.encode(TEXTS, max_length=64), lambda: _naive_weights(model, TEXTS)):
        model.zero_grad()
        weights = encode()
        # a loss that depends on every weight, unevenly
        loss = (weights * torch.linspace(0.5, 1.5, weights.shape[1], device=device)).sum()
        loss.backward()
        grads.append((weights.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (fused, fused_grads), (naive, naive_grads) = grads
    assert fused.shape == (len(TEXTS), 250_002) and (fused > 0).sum() > 1000
    torch.testing.assert_close(fused, naive, atol=1e-5, rtol=1e-4)
    assert fused_grads.keys() == naive_grads.keys() and len(fused_grads) > 5
    for name, grad in fused_grads.items():  # summation order differs; two random layers amplify it
        scale = naive_grads[name].abs().max().item()
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-4 * scale, rtol=1e-2, msg=lambda m, name=name: f"{name}: {m}")
